// Collectives that autograd differentiates, for use inside models. Each
// backward is the adjoint of its forward:
//   all_to_all      <-> the inverse all_to_all (Ulysses), even or uneven
//   all_gather      <-> reduce_scatter (sum)
//   reduce_scatter  <-> all_gather
//   copy_to_region (identity)  <-> all_reduce (sum)     Megatron's f
//   reduce_from_region (all_reduce) <-> identity        Megatron's g
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "parallel/comm/communicator.h"

namespace lt {

// Splits `x` into group-size chunks along `scatter_dim`, sends chunk i to
// rank i, and concatenates what arrives along `gather_dim`.
at::Tensor all_to_all(const at::Tensor& x, Communicator& comm, int64_t scatter_dim, int64_t gather_dim);
// Uneven, along dim 0: send_rows[i] rows to rank i, recv_rows[j] from rank j.
at::Tensor all_to_all(const at::Tensor& x, Communicator& comm, std::vector<int64_t> send_rows,
                      std::vector<int64_t> recv_rows);
// Concatenates every rank's `x` along `dim`, in rank order.
at::Tensor all_gather(const at::Tensor& x, Communicator& comm, int64_t dim);
// Sums `x` over the group; rank i keeps chunk i along `dim`.
at::Tensor reduce_scatter(const at::Tensor& x, Communicator& comm, int64_t dim);
at::Tensor copy_to_region(const at::Tensor& x, Communicator& comm);
at::Tensor reduce_from_region(const at::Tensor& x, Communicator& comm);

}  // namespace lt

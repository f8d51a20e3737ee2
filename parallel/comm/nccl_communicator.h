// NCCL for the device tensors of one group (the CUDA path of Communicator).
// Operations run on the communicator's own stream, ordered after the work
// already queued on the caller's stream by an event; the returned Work
// completes when NCCL has, and then orders the caller's stream after it.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <memory>
#include <vector>

#include "parallel/comm/work.h"

namespace lt {

enum class ReduceOp;
struct Message;
using NcclUniqueId = std::array<char, 128>;

class NcclCommunicator {
 public:
  // Call on one rank, then share the bytes with the others.
  static NcclUniqueId create_id();

  // Joins the group under the watchdog of `init` (its op and timeout).
  NcclCommunicator(const NcclUniqueId& id, int rank, int size, int device, Work::Source init);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  Work all_reduce(at::Tensor& tensor, ReduceOp op, Work::Source source);
  Work all_gather(const at::Tensor& input, at::Tensor& output, Work::Source source);
  Work reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op, Work::Source source);
  Work all_to_all(const at::Tensor& input, at::Tensor& output, const std::vector<int64_t>& send_bytes,
                  const std::vector<int64_t>& recv_bytes, Work::Source source);
  Work broadcast(at::Tensor& tensor, int root, Work::Source source);
  // One ncclGroupStart/End: the sends and receives progress together.
  Work exchange(const std::vector<Message>& sends, const std::vector<Message>& receives, Work::Source source);
  // ncclCommAbort: NCCL's kernels in flight end, later calls fail.
  void abort();

  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  template <class Call>
  Work enqueue(Work::Source source, std::vector<at::Tensor> tensors, Call&& call);

  void* comm_ = nullptr;  // ncclComm_t, kept opaque so this header needs no nccl.h
  struct Stream;
  std::unique_ptr<Stream> stream_;
  int rank_, size_;
};

}  // namespace lt

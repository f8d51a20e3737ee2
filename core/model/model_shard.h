// How one rank's copy of the model is cut: its tensor-parallel slice of every
// layer, its pipeline stage's layers, and the communication at the edges of
// tensor-parallel regions. The model is written once; parallel/ fills this in
// (parallel/tensor_parallel, parallel/pipeline) and the defaults are the
// whole model on one rank.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <vector>

#include "core/model/compute_weights.h"
#include "core/optim/gradient_handoff.h"

namespace lt {

class MoeBalance;

using RegionFn = std::function<at::Tensor(const at::Tensor&)>;

struct ModelShard {
  int64_t tp_rank = 0, tp_size = 1;
  // Megatron's sequence parallelism: between tensor-parallel regions (norms,
  // residual) activations are split along the sequence over the tp ranks.
  bool tp_sequence = false;
  // Into a region (Megatron's f: identity, or the all-gather of the sequence)
  // and out of it (g: the sum over tp ranks, or its reduce-scatter). Unset:
  // identity.
  RegionFn enter, leave;

  // train.precision: bf16: the layers compute with bf16 copies of their
  // fp32 parameters; null: in the parameters' own dtype.
  std::shared_ptr<ComputeWeights> compute;
  // Each layer's and the head's input pass through it, so that whoever
  // waits for final gradients (data-parallel buckets, offloaded chunks)
  // hears when backward leaves them. The model makes one if unset.
  std::shared_ptr<GradientHandoff> handoff;

  int64_t first_layer = 0, num_layers = -1;  // this stage's layers; -1: all
  bool first_stage = true, last_stage = true;
  // What the mixture-of-experts layers share (their balance scope over the
  // ranks); unset: one rank's.
  std::shared_ptr<MoeBalance> moe;
  // Expert parallelism: this rank holds experts [ep_rank * n, (ep_rank + 1)
  // * n) of n * ep_size. `exchange_counts` sends counts[i * m, (i + 1) * m)
  // to ep rank i and returns what each sent (rank j's m at j * m);
  // `exchange` sends send_rows[i] rows of x to ep rank i and returns the
  // rows that arrive, recv_rows[j] from rank j (differentiable).
  int64_t ep_rank = 0, ep_size = 1;
  std::function<std::vector<int64_t>(const std::vector<int64_t>& counts)> exchange_counts;
  std::function<at::Tensor(const at::Tensor& x, const std::vector<int64_t>& send_rows,
                           const std::vector<int64_t>& recv_rows)>
      exchange;
};

// Where a rank's parameter sits in the full tensor: the local tensor is
// full.narrow(dim, offset, local.size(dim)); `copies` tensor-parallel ranks
// hold the same slice, and when `partial` each holds only its share of the
// gradient (to be summed over them), otherwise all of it.
struct TensorSlice {
  int64_t dim = 0, offset = 0, full = 0;
  int64_t copies = 1;
  bool partial = false;
};

}  // namespace lt

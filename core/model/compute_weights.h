// Mixed precision (train.precision: bf16): layers compute with bf16 copies
// of their parameters while the parameters themselves stay fp32 masters, so
// gradients accumulate, reduce, clip and update in fp32 and checkpoints
// hold the masters. The copy of a parameter is cast once after each change
// of the masters (an optimizer step, a load) and reused by every
// micro-batch and recomputation until the next; its gradient reaches the
// master through the cast, in fp32 (Megatron's main gradients). A parameter
// already in the compute dtype (an offloaded chunk's device copy) is used
// as it is.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <unordered_map>

#include "core/config/config.h"

namespace lt {

class ComputeWeights {
 public:
  explicit ComputeWeights(at::ScalarType dtype) : dtype_(dtype) {}

  at::ScalarType dtype() const { return dtype_; }
  // `param` in the compute dtype, differentiable with respect to `param`.
  at::Tensor operator()(const at::Tensor& param);
  // The masters changed: every next use casts anew.
  void refresh() { copies_.clear(); }

 private:
  at::ScalarType dtype_;
  std::unordered_map<const c10::TensorImpl*, at::Tensor> copies_;
};

// The dtype the layers compute in under a (resolved) train.precision.
inline at::ScalarType compute_dtype(const TrainConfig& train) { return train.bf16() ? at::kBFloat16 : at::kFloat; }

// What a module reads its weights through: the parameter itself when
// `compute` is null (fp32 training), else its compute copy.
inline at::Tensor compute_weight(const std::shared_ptr<ComputeWeights>& compute, const at::Tensor& param) {
  return compute && param.defined() ? (*compute)(param) : param;
}
// An activation in the compute dtype (the embedding's rows, gathered from
// the fp32 table).
inline at::Tensor compute_activation(const std::shared_ptr<ComputeWeights>& compute, const at::Tensor& x) {
  return compute ? x.to(compute->dtype()) : x;
}

}  // namespace lt

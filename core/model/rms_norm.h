// RMSNorm as HF Llama: normalise in fp32, then scale in the input dtype.
#pragma once
#include <torch/nn/module.h>

#include "core/model/compute_weights.h"

namespace lt {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, std::shared_ptr<ComputeWeights> compute = nullptr);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;

 private:
  double eps_;
  std::shared_ptr<ComputeWeights> compute_;
};
TORCH_MODULE(RMSNorm);

}  // namespace lt

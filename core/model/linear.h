// y = x W^T + b with W and b read through the model's compute weights
// (compute_weights.h): bf16 copies under mixed precision, the parameters
// themselves otherwise. Named weight and bias, as torch::nn::Linear and HF.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "core/model/compute_weights.h"

namespace lt {

class LinearImpl : public torch::nn::Module {
 public:
  // The values are set by LlamaForCausalLM::initialize or a load.
  LinearImpl(int64_t in, int64_t out, bool bias, std::shared_ptr<ComputeWeights> compute)
      : compute_(std::move(compute)) {
    weight = register_parameter("weight", at::empty({out, in}));
    if (bias) this->bias = register_parameter("bias", at::empty({out}));
  }
  at::Tensor forward(const at::Tensor& x) {
    return at::linear(x, compute_weight(compute_, weight), compute_weight(compute_, bias));
  }

  at::Tensor weight, bias;

 private:
  std::shared_ptr<ComputeWeights> compute_;
};
TORCH_MODULE(Linear);

}  // namespace lt

// RMSNorm as HF Llama: normalise in fp32, then scale in the input dtype.
#pragma once
#include <torch/nn/module.h>

namespace lt {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace lt

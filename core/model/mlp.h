// The SwiGLU MLP of a Llama layer, and of each expert: down(silu(gate(x)) * up(x)).
#pragma once
#include <torch/nn/module.h>

#include "core/model/linear.h"

namespace lt {

class LlamaMLPImpl : public torch::nn::Module {
 public:
  // `columns`: the intermediate size this rank holds (its tensor-parallel share).
  LlamaMLPImpl(int64_t hidden, int64_t columns, const std::shared_ptr<ComputeWeights>& compute = nullptr);
  at::Tensor forward(const at::Tensor& x) { return down_proj(at::silu(gate_proj(x)) * up_proj(x)); }

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

}  // namespace lt

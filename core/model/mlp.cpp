#include "core/model/mlp.h"

namespace lt {

LlamaMLPImpl::LlamaMLPImpl(int64_t hidden, int64_t columns, const std::shared_ptr<ComputeWeights>& compute) {
  auto linear = [&](int64_t in, int64_t out) { return Linear(in, out, false, compute); };
  gate_proj = register_module("gate_proj", linear(hidden, columns));
  up_proj = register_module("up_proj", linear(hidden, columns));
  down_proj = register_module("down_proj", linear(columns, hidden));
}

}  // namespace lt

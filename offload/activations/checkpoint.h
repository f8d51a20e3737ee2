// Activation checkpointing as an autograd function: forward runs f(x)
// without keeping anything but x; backward runs f again on x with autograd
// on, backpropagates the incoming gradient through it (parameters receive
// their gradients there, through their usual accumulators and hooks) and
// returns x's gradient. The random generators' state at forward is restored
// for the recomputation, so f may draw random numbers (dropout) and still
// recompute exactly what forward computed.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <memory>

namespace lt {

using TensorFn = std::function<at::Tensor(const at::Tensor&)>;

// Where a checkpoint keeps its input from forward to backward: with the
// graph by default, or elsewhere (activation_offload.h: host memory).
class InputStash {
 public:
  virtual ~InputStash() = default;
  virtual int64_t put(const at::Tensor& x) = 0;  // forward; returns a ticket
  virtual at::Tensor take(int64_t ticket) = 0;   // backward, once per ticket
};

// `f` must be deterministic given the generator state and stay callable
// until backward has run (it is kept by the graph).
at::Tensor checkpoint(TensorFn f, const at::Tensor& x, std::shared_ptr<InputStash> stash = nullptr);

}  // namespace lt

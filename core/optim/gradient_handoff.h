// When a parameter's gradient is final: once backward has left the part of
// the model that reads it (its scope: a layer, or the head), every tile,
// recomputation and micro-batch of that part included. Data-parallel
// buckets start their reduction, and offloaded chunks send their gradients
// to the host, on this one signal.
//
// Counting gradient-accumulation hooks cannot decide it: a tiled MLP's
// weight accumulates once per tile, a layer recomputed in backward runs its
// own backward pass, and a chunk of several layers hears from each. Instead
// the model passes each scope's input through enter(): an identity whose
// backward runs once the input's gradient is complete, which is after every
// operation of the scope has run its backward and accumulated its
// parameters' gradients: each reads the input, and the model must read a
// scope's weights (their casts to the compute dtype included) only after
// enter(), so that autograd, which runs the newest ready node first, runs
// their accumulation before enter()'s backward.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace lt {

class GradientHandoff {
 public:
  // The head's scope: the final norm and the output projection.
  static constexpr int64_t kHead = std::numeric_limits<int64_t>::max();
  // Parameters outside every scope (the embedding, tied or not): their
  // gradients are final only when backward ends.
  static constexpr int64_t kUnscoped = -1;
  // A parameter's scope, from its model name: "model.layers.12.mlp..." ->
  // 12, the final norm and lm_head -> kHead, anything else kUnscoped.
  static int64_t scope_of(const std::string& name);

  // Forward: x enters `scope` (returned as it is when autograd is off or x
  // needs no gradient). Backward: when x's gradient is complete, the
  // listeners hear that backward has left the scope.
  at::Tensor enter(const at::Tensor& x, int64_t scope);

  // `left(scope, final)`: this backward has left `scope`, its gradients of
  // this backward accumulated; `final` when no forward of the scope awaits
  // its backward any more, so its parameters' gradients are final.
  using Listener = std::function<void(int64_t scope, bool final)>;
  // A listener, heard until this goes.
  class Listening {
   public:
    Listening() = default;
    Listening(std::shared_ptr<GradientHandoff> handoff, int id) : handoff_(std::move(handoff)), id_(id) {}
    Listening(Listening&&) = default;
    Listening& operator=(Listening&& other) noexcept;
    ~Listening();

   private:
    std::shared_ptr<GradientHandoff> handoff_;
    int id_ = -1;
  };
  static Listening listen(const std::shared_ptr<GradientHandoff>& handoff, Listener listener);

  // A step begins: forwards whose backward never ran (a probe, an aborted
  // step) are forgotten.
  void reset();
  // Forwards of `scope` that await their backward.
  int64_t open(int64_t scope) const;

  // Called by enter()'s backward.
  void left(int64_t scope);

 private:
  mutable std::mutex mutex_;
  std::map<int64_t, int64_t> open_;
  std::vector<std::pair<int, Listener>> listeners_;
  int next_id_ = 0;
};

// After `param.set_data(...)` to another shape PyTorch keeps the parameter's
// gradient accumulator, which checks gradients against the old shape: the
// parameter gets a new one.
void renew_grad_accumulator(const at::Tensor& param);

}  // namespace lt

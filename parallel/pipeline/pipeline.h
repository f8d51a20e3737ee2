// Runs a stage's 1F1B schedule (schedule.h) for one step: activations go to
// the next stage and their gradients come back over the pp communicator's
// point-to-point operations. With one stage it is the plain micro-batch loop
// (forward, backward, forward, backward...), so every run takes this path.
#pragma once
#include <functional>

#include "parallel/comm/communicator.h"
#include "parallel/pipeline/schedule.h"

namespace lt {

struct StageWork {
  // Forward of one micro-batch: `input` is what the previous stage sent
  // (undefined on the first stage). Returns the activations for the next
  // stage, or on the last the scalar loss to backpropagate.
  std::function<at::Tensor(int micro, const at::Tensor& input)> forward;
  // Shape of the activations micro-batch `micro` passes between stages:
  // every stage knows the batch, so nothing but the tensors is sent.
  std::function<std::vector<int64_t>(int micro)> shape;
  // Run before and after the backward of micro-batch `micro` (may be empty).
  std::function<void(int micro)> before_backward, after_backward;
  // GPipe's order: every forward before the first backward (a global-batch
  // balance loss needs every micro-batch's routing first), holding every
  // micro-batch's activations instead of 1F1B's p - s.
  bool all_forward_first = false;
};

class Pipeline {
 public:
  // `pp`: the ranks of this pipeline, in stage order.
  Pipeline(Communicator& pp, at::TensorOptions activations);

  void run(int micro_batches, const StageWork& work);

  // Of the last run: seconds in forward and backward, and in all.
  double compute_seconds() const { return compute_s_; }
  double total_seconds() const { return total_s_; }

 private:
  Communicator& pp_;
  at::TensorOptions options_;
  double compute_s_ = 0, total_s_ = 0;
};

}  // namespace lt

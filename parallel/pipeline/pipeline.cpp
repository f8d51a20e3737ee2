#include "parallel/pipeline/pipeline.h"

#include <chrono>

namespace lt {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One tag per micro-batch and direction: a message can only match its own receive.
int tag(int micro, bool backward) { return 2 * micro + (backward ? 1 : 0); }

}  // namespace

Pipeline::Pipeline(Communicator& pp, at::TensorOptions activations) : pp_(pp), options_(activations) {}

void Pipeline::run(int micro_batches, const StageWork& work) {
  const auto start = std::chrono::steady_clock::now();
  const int stage = pp_.rank(), previous = stage - 1, next = stage + 1;
  std::vector<at::Tensor> inputs(micro_batches), outputs(micro_batches), grads(micro_batches);
  std::vector<std::pair<Work, at::Tensor>> sends;  // a send's tensor lives until it completes
  compute_s_ = 0;
  for (const auto& a : one_f_one_b(stage, pp_.size(), micro_batches, work.all_forward_first)) {
    const int m = a.micro;
    switch (a.op) {
      case PipeOp::recv_forward:
        inputs[m] = at::empty(work.shape(m), options_);
        pp_.recv(inputs[m], previous, tag(m, false));
        inputs[m].requires_grad_(true);
        break;
      case PipeOp::forward: {
        const auto t = std::chrono::steady_clock::now();
        outputs[m] = work.forward(m, inputs[m]);
        compute_s_ += seconds_since(t);
        break;
      }
      case PipeOp::send_forward: {
        auto sent = outputs[m].detach().contiguous();
        sends.emplace_back(pp_.isend(sent, next, tag(m, false)), sent);
        break;
      }
      case PipeOp::recv_backward:
        grads[m] = at::empty(outputs[m].sizes(), options_);
        pp_.recv(grads[m], next, tag(m, true));
        break;
      case PipeOp::backward: {
        if (work.before_backward) work.before_backward(m);
        const auto t = std::chrono::steady_clock::now();
        grads[m].defined() ? outputs[m].backward(grads[m]) : outputs[m].backward();
        compute_s_ += seconds_since(t);
        outputs[m] = grads[m] = at::Tensor();
        if (work.after_backward) work.after_backward(m);
        break;
      }
      case PipeOp::send_backward: {
        auto sent = inputs[m].grad().contiguous();
        sends.emplace_back(pp_.isend(sent, previous, tag(m, true)), sent);
        inputs[m] = at::Tensor();
        break;
      }
    }
  }
  for (auto& [w, tensor] : sends) w.wait();
  total_s_ = seconds_since(start);
}

}  // namespace lt

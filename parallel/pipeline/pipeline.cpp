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
  std::vector<Work> sends;  // their messages hold the tensors until they complete
  compute_s_ = 0;
  // A receive's message (allocated here) and a send's.
  auto receive = [&](const PipeAction& a) -> Message {
    const int m = a.micro;
    if (a.op == PipeOp::recv_forward) return {inputs[m] = at::empty(work.shape(m), options_), previous, tag(m, false)};
    return {grads[m] = at::empty(outputs[m].sizes(), options_), next, tag(m, true)};
  };
  auto send = [&](const PipeAction& a) -> Message {
    const int m = a.micro;
    if (a.op == PipeOp::send_forward) return {outputs[m].detach().contiguous(), next, tag(m, false)};
    Message sent{inputs[m].grad().contiguous(), previous, tag(m, true)};
    inputs[m] = at::Tensor();
    return sent;
  };
  auto received = [&](const PipeAction& a) {
    if (a.op == PipeOp::recv_forward) inputs[a.micro].requires_grad_(true);
  };
  const auto actions = one_f_one_b(stage, pp_.size(), micro_batches, work.all_forward_first);
  for (size_t i = 0; i < actions.size(); ++i) {
    const auto& a = actions[i];
    const int m = a.micro;
    switch (a.op) {
      case PipeOp::recv_forward:
      case PipeOp::recv_backward:
        pp_.exchange({}, {receive(a)}).wait();
        received(a);
        break;
      case PipeOp::send_forward:
      case PipeOp::send_backward:
        if (sent_with_next_receive(actions, i)) {
          const auto& r = actions[++i];
          pp_.exchange({send(a)}, {receive(r)}).wait();
          received(r);
        } else {
          sends.push_back(pp_.exchange({send(a)}, {}));
        }
        break;
      case PipeOp::forward: {
        const auto t = std::chrono::steady_clock::now();
        outputs[m] = work.forward(m, inputs[m]);
        compute_s_ += seconds_since(t);
        break;
      }
      case PipeOp::backward: {
        if (work.before_backward) work.before_backward(m);
        const auto t = std::chrono::steady_clock::now();
        grads[m].defined() ? outputs[m].backward(grads[m]) : outputs[m].backward();
        compute_s_ += seconds_since(t);
        outputs[m] = grads[m] = at::Tensor();
        if (work.after_backward) work.after_backward(m);
        break;
      }
    }
  }
  for (auto& w : sends) w.wait();
  total_s_ = seconds_since(start);
}

}  // namespace lt

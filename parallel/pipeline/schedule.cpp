#include "parallel/pipeline/schedule.h"

#include <algorithm>

namespace lt {

std::vector<PipeAction> one_f_one_b(int stage, int stages, int micro_batches, bool all_forward_first) {
  const bool first = stage == 0, last = stage == stages - 1;
  std::vector<PipeAction> out;
  auto forward = [&](int micro) {
    if (!first) out.push_back({PipeOp::recv_forward, micro});
    out.push_back({PipeOp::forward, micro});
    if (!last) out.push_back({PipeOp::send_forward, micro});
  };
  auto backward = [&](int micro) {
    if (!last) out.push_back({PipeOp::recv_backward, micro});
    out.push_back({PipeOp::backward, micro});
    if (!first) out.push_back({PipeOp::send_backward, micro});
  };
  const int warmup = all_forward_first ? micro_batches : std::min(stages - stage - 1, micro_batches);
  for (int i = 0; i < warmup; ++i) forward(i);
  for (int i = warmup; i < micro_batches; ++i) {
    forward(i);
    backward(i - warmup);
  }
  for (int i = micro_batches - warmup; i < micro_batches; ++i) backward(i);
  return out;
}

bool sent_with_next_receive(const std::vector<PipeAction>& actions, size_t i) {
  auto sends = [](PipeOp op) { return op == PipeOp::send_forward || op == PipeOp::send_backward; };
  auto receives = [](PipeOp op) { return op == PipeOp::recv_forward || op == PipeOp::recv_backward; };
  return sends(actions[i].op) && i + 1 < actions.size() && receives(actions[i + 1].op);
}

int in_flight(int stage, int stages, int micro_batches, bool all_forward_first) {
  return all_forward_first ? micro_batches : std::min(stages - stage, micro_batches);
}

std::string describe(const std::vector<PipeAction>& actions) {
  std::string out;
  for (const auto& a : actions) {
    if (!out.empty()) out += ' ';
    switch (a.op) {
      case PipeOp::recv_forward:
        out += "<F";
        break;
      case PipeOp::forward:
        out += "F";
        break;
      case PipeOp::send_forward:
        out += ">F";
        break;
      case PipeOp::recv_backward:
        out += "<B";
        break;
      case PipeOp::backward:
        out += "B";
        break;
      case PipeOp::send_backward:
        out += ">B";
        break;
    }
    out += std::to_string(a.micro);
  }
  return out;
}

double bubble_fraction(int stages, int micro_batches) {
  return static_cast<double>(stages - 1) / (micro_batches + stages - 1);
}

}  // namespace lt

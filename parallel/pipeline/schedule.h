// The 1F1B pipeline schedule (PipeDream-Flush, Megatron's default) as data:
// what one stage does, in order, for a step of m micro-batches on p stages.
// Stage s first runs min(p - s - 1, m) forwards (warm-up), then alternates
// one forward and one backward (steady state), then runs the remaining
// backwards (cool-down), so it holds at most p - s micro-batches' activations
// instead of m. Sends are posted without waiting; receives wait.
#pragma once
#include <string>
#include <vector>

namespace lt {

enum class PipeOp { recv_forward, forward, send_forward, recv_backward, backward, send_backward };

struct PipeAction {
  PipeOp op;
  int micro = 0;
  bool operator==(const PipeAction&) const = default;
};

// `all_forward_first`: warm up with every forward (GPipe's order).
std::vector<PipeAction> one_f_one_b(int stage, int stages, int micro_batches, bool all_forward_first = false);

// Whether actions[i], a send, goes out with the receive after it as one
// exchange (Megatron's send_forward_recv_backward and
// send_backward_recv_forward): in the steady state the neighbours send to
// each other at once, and issued apart over NCCL both would wait for ever
// once a message outgrows NCCL's buffer. Every other transfer goes alone.
bool sent_with_next_receive(const std::vector<PipeAction>& actions, size_t i);

// Micro-batches whose activations stage `stage` holds at once under that
// schedule: p - s with 1F1B, every one with all forwards first (at most m).
int in_flight(int stage, int stages, int micro_batches, bool all_forward_first = false);

// "F0 F1 B0 ..." with sends and receives as ">F0" "<F0" (debugging, tests).
std::string describe(const std::vector<PipeAction>& actions);

// The idle fraction of 1F1B with equal stage times: (p - 1) / (m + p - 1).
double bubble_fraction(int stages, int micro_batches);

}  // namespace lt

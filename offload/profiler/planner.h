// ProTrain's choice, made by a cost model over a Profile: how many chunks
// stay on the device (n_persist), how many buffers the others share
// (n_buffer), and for each layer whether it keeps its activations, is
// recomputed in backward (checkpoint) or also sends its input to the host
// (swap), so that the predicted peak fits the device budget and the
// predicted step time is least.
#pragma once
#include <string>

#include "offload/activations/memory_policy.h"
#include "offload/profiler/profile.h"

namespace lt {

struct MemoryPlan {
  LayerModes modes;
  int64_t n_persist = 0, n_buffer = 0;
  // Predicted for one step of this rank.
  double step_s = 0;
  int64_t state = 0, chunks = 0, activations = 0;  // device bytes at the peak, by kind
  int64_t peak() const { return state + chunks + activations; }
};

// Fills the predictions of a plan.
MemoryPlan predict(const Profile& profile, LayerModes modes, int64_t n_persist, int64_t n_buffer);

// The fastest plan whose peak fits 95% of `device_budget` bytes; fails,
// naming the smallest budget any plan fits, when none does.
MemoryPlan choose_plan(const Profile& profile, int64_t device_budget);

// One line per kind of choice: "layers 0-5 checkpoint, 6-7 keep; 2 of 4
// chunks persistent, 1 buffer; predicted step 1.2 s, peak 3.4 GiB (...)".
std::string describe(const MemoryPlan& plan, int64_t chunk_count);

}  // namespace lt

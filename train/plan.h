// What a parallel layout means for each rank, before anything runs: the
// grid (coordinates, machine), how the layers split into pipeline stages,
// and an estimate of parameters and memory per rank. `longtrain plan` prints
// it; later memory features (checkpointing, offload) refine the estimate.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "offload/profiler/profile.h"
#include "parallel/mesh/layout.h"

namespace lt {

struct StagePlan {
  int64_t first_layer = 0, layers = 0;
  bool embedding = false, head = false;  // first and last stage
  int64_t parameters = 0;                // held by one rank of this stage
  // Bytes per rank on the device.
  int64_t weights = 0, gradients = 0, optimizer = 0, activations = 0;
  int64_t host = 0;              // memory.offload_model: the layers' state in host memory
  int64_t host_activations = 0;  // memory.offload_activations: the recomputed layers' inputs in host memory
  int64_t chunks = 0;            // of weights and gradients: the resident chunks' (memory.offload_model)
  int64_t total() const { return weights + gradients + optimizer + activations; }
};

// Per pipeline stage: its layers (split_stages: balanced by cost, the
// embedding and the head counted), parameters and memory of one rank.
std::vector<StagePlan> plan_stages(const Config& config, const Degrees& degrees);

// What memory.plan: auto would profile on `stage`, estimated without
// running: layer times from their FLOPs at an assumed rate, bytes from the
// activation model.
Profile estimated_profile(const Config& config, const Degrees& degrees, int stage);

// The full report `longtrain plan` prints.
std::string describe_plan(const Config& config, int world, int ranks_per_node);

}  // namespace lt

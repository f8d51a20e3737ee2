// What the planner knows about one rank's training step: per layer, its
// times and the device bytes it keeps; the model state it must hold; the
// host link and the optimizer. Measured on the first step (profiler.h) or,
// for `longtrain plan`, estimated from the model's shape.
#pragma once
#include <cstdint>
#include <vector>

namespace lt {

// One decoder layer on one micro-batch. Bytes are device bytes above those
// in use when the step began.
struct BlockProfile {
  int64_t layer = 0;
  double forward_s = 0;    // forward without autograd (a checkpointed layer's forward)
  double recompute_s = 0;  // forward with autograd (a kept layer's forward, or the recomputation)
  double backward_s = 0;   // backward through it
  int64_t input = 0;       // bytes of its input: what a swapped layer moves to the host
  int64_t output = 0;      // bytes of its output: all a checkpointed layer adds
  int64_t kept = 0;        // bytes a kept layer adds: what backward needs, its output included
  int64_t start = 0;       // in use when its backward begins, every layer checkpointed
  int64_t transient = 0;   // the most above `start` during its backward (recomputation included)
};

struct Profile {
  std::vector<BlockProfile> blocks;  // execution order
  int64_t base = 0;                  // in use when the first layer starts (embeddings, RoPE tables, the batch)
  int64_t head_peak = 0;             // the most in use while the head and loss run, every layer checkpointed
  double other_s = 0;                // embedding, head and loss, forward and backward
  int micro_batches = 1;             // per step on this rank
  int in_flight = 1;                 // micro-batches whose activations a pipeline stage holds at once

  int64_t state = 0;                    // device bytes of the weights, gradients and optimizer state outside chunks
  std::vector<int64_t> chunks;          // bytes of each chunk's weights (memory.offload_model; else empty)
  std::vector<int64_t> chunk_of_block;  // per block, its chunk
  double optimizer_s = 0;               // one AdamW step over the parameters outside chunks
  double host_optimizer_s = 0;          // and over this rank's part of the chunks, on the host
  bool overlap_host_optimizer = false;  // the chunks' update runs beside the last backward (on its own cores)
  double link_bytes_per_s = 0;          // host <-> device copies
  bool overlap_swaps = false;           // activation copies run beside compute (CUDA side stream)
  bool overlap_chunk_copies = false;    // chunk copies run beside compute (not yet: they share its stream)
  bool swap_frees_device = false;       // host memory is not the device's (CUDA)
};

}  // namespace lt

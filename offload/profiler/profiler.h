// Measures a Profile on this machine: one micro-batch forward and backward
// through this rank's layers with every layer checkpointed (the leanest
// setting, so profiling fits wherever training can), timing each layer's
// forward, recomputation and backward and reading the device bytes in use
// at each boundary; then the host link's bandwidth and AdamW's speed.
#pragma once
#include <functional>

#include "core/model/llama.h"
#include "offload/activations/memory_policy.h"
#include "offload/profiler/profile.h"

namespace lt {

// `step` runs forward and backward of one micro-batch through `model`; the
// layers run under the profiler's own runners meanwhile (the model's own
// are back afterwards), each after `fetch` brought its weights (offloaded
// chunks). Fills the per-layer fields, base, head_peak and other_s; the
// parameters are left with that micro-batch's gradients.
Profile profile_layers(LlamaForCausalLMImpl& model, const LayerFetch& fetch, const at::Device& device,
                       const std::function<void()>& step);

// Host -> device -> host copies of `bytes`, bytes per second each way
// (pinned memory on CUDA).
double measure_link(const at::Device& device, int64_t bytes);

// Seconds AdamW takes per element on `device` (one step, fp32 state).
double measure_adamw(const at::Device& device);

}  // namespace lt

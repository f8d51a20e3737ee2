// Bytes allocated on the training device, now and at most since a reset:
// what the profiler measures and the planner's prediction is checked
// against. On CUDA these are the caching allocator's statistics. On a CPU
// build the "device" is the host, so a counting allocator is installed as
// LibTorch's CPU allocator: every tensor allocated after that is counted
// until it is freed, exactly, with no sampling.
#pragma once
#include <ATen/ATen.h>

namespace lt {

// Installs the counting allocator (CPU; once per process, idempotent).
void track_device_memory();

int64_t device_bytes(const at::Device& device);
int64_t device_peak_bytes(const at::Device& device);
// The peak becomes the bytes allocated now.
void reset_device_peak(const at::Device& device);

}  // namespace lt

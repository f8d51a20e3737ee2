// What the machine offers and what we used of it: peak memory, matrix-product
// peak rate (the MFU denominator, measured in the same run), thread counts.
#pragma once
#include <ATen/ATen.h>

#include "core/config/config.h"

namespace lt {

// Peak resident memory of this process (CPU) or peak allocated (CUDA), bytes.
int64_t peak_memory_bytes(const at::Device& device);

// All the memory of `device`: the GPU's, or the machine's RAM (bytes).
int64_t memory_capacity_bytes(const at::Device& device);

// Forgets the peak so far, so the next reading covers only what follows.
void reset_peak_memory(const at::Device& device);

// Square matrix products in `dtype` (the MFU denominator of a run
// computing in it), FLOP/s. On CUDA: 8192^3, 20 repetitions after a warm-up
// timed with CUDA events (smaller products leave an H100's tensor cores
// idle part of the time, and a host clock times launches); on a CPU the
// best of a few 2048^3 products.
double measure_matmul_peak(const at::Device& device, at::ScalarType dtype);

// The device `train.device` names (the local rank's GPU on CUDA); fails
// clearly when it is not there.
at::Device device_for(DeviceKind kind, int local_rank = 0);

// Makes `device` this thread's current device (CUDA: every later kernel,
// allocation and NCCL call of the thread goes there). Nothing on a CPU.
void make_current(const at::Device& device);

// Waits until every stream of `device` is idle: before and after timing
// device work with a host clock, which otherwise times the launches.
void synchronize(const at::Device& device);

// Fails unless `device` computes in bf16 (a GPU from Ampere on; a CPU's
// support is checked with the recipe, core/util/bf16_support.h).
void check_bf16_device(const at::Device& device);

// Intra-op threads: cores / ranks on this machine unless `requested` > 0.
int64_t default_threads(int64_t requested, int64_t local_ranks = 1);

}  // namespace lt

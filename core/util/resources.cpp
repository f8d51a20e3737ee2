#include "core/util/resources.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include <unistd.h>

#include "core/util/error.h"

#ifdef LT_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace lt {

int64_t peak_memory_bytes(const at::Device& device) {
#ifdef LT_WITH_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

int64_t memory_capacity_bytes(const at::Device& device) {
#ifdef LT_WITH_CUDA
  if (device.is_cuda()) {
    size_t free = 0, total = 0;
    c10::cuda::CUDAGuard guard(device.index() < 0 ? 0 : device.index());
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) return static_cast<int64_t>(total);
  }
#endif
  return static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<int64_t>(sysconf(_SC_PAGE_SIZE));
}

void reset_peak_memory(const at::Device& device) {
#ifdef LT_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
    return;
  }
#endif
  std::ofstream("/proc/self/clear_refs") << "5";  // Linux: resets VmHWM to the current RSS
}

#ifdef LT_WITH_CUDA
double cuda_matmul_peak(const at::Device& device, at::ScalarType dtype) {
  const int64_t n = 8192, repetitions = 20;
  c10::cuda::CUDAGuard guard(device);
  auto a = at::randn({n, n}, at::TensorOptions().device(device).dtype(dtype));
  auto b = at::randn({n, n}, a.options()), c = at::empty({n, n}, a.options());
  for (int i = 0; i < 3; ++i) at::mm_out(c, a, b);  // warm-up: cuBLAS picks its kernel, clocks rise
  at::cuda::CUDAEvent start(cudaEventDefault), end(cudaEventDefault);
  const auto stream = c10::cuda::getCurrentCUDAStream(device.index());
  start.record(stream);
  for (int i = 0; i < repetitions; ++i) at::mm_out(c, a, b);
  end.record(stream);
  end.synchronize();
  const double seconds = start.elapsed_time(end) / 1e3;
  return 2.0 * n * n * n * repetitions / seconds;
}
#endif

double measure_matmul_peak(const at::Device& device, at::ScalarType dtype) {
#ifdef LT_WITH_CUDA
  if (device.is_cuda()) return cuda_matmul_peak(device, dtype);
#endif
  const int64_t n = 2048;
  auto a = at::randn({n, n}, at::TensorOptions().device(device).dtype(dtype));
  auto b = at::randn({n, n}, a.options());
  double best = 0;
  for (int i = 0; i < 4; ++i) {
    auto start = std::chrono::steady_clock::now();
    auto c = at::mm(a, b);
    (void)c.sum().item<float>();  // waits for the device
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i > 0) best = std::max(best, 2.0 * n * n * n / seconds);
  }
  return best;
}

void make_current(const at::Device& device) {
#ifdef LT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::set_device(device.index());
#else
  (void)device;
#endif
}

void synchronize(const at::Device& device) {
#ifdef LT_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDAGuard guard(device);
    c10::cuda::device_synchronize();
  }
#else
  (void)device;
#endif
}

at::Device device_for(DeviceKind kind, int local_rank) {
  if (kind != DeviceKind::cuda) return at::Device(at::kCPU);
  if (!at::hasCUDA())
    fail("train.device is 'cuda' but no CUDA device is visible to this process; use train.device=cpu");
  const int devices = static_cast<int>(at::getNumGPUs());
  // A launcher that gives each rank one GPU of its own (Slurm's
  // --gpus-per-task=1) leaves one visible, named by CUDA_VISIBLE_DEVICES.
  if (devices == 1 && std::getenv("CUDA_VISIBLE_DEVICES")) return at::Device(at::kCUDA, 0);
  if (local_rank >= devices)
    fail("local rank " + std::to_string(local_rank) + " has no GPU of its own (" + std::to_string(devices) +
         " visible on this machine): start at most " + std::to_string(devices) +
         " ranks per machine, or give each rank its own (--gpus-per-task=1)");
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

void check_bf16_device(const at::Device& device) {
#ifdef LT_WITH_CUDA
  if (!device.is_cuda()) return;
  cudaDeviceProp properties{};
  cudaGetDeviceProperties(&properties, device.index() < 0 ? 0 : device.index());
  if (properties.major < 8)
    fail("train.precision: bf16 needs a GPU of compute capability 8.0 or newer (Ampere on), and " +
         std::string(properties.name) + " is " + std::to_string(properties.major) + "." +
         std::to_string(properties.minor) + ": set train.precision: fp32");
#endif
}

int64_t default_threads(int64_t requested, int64_t local_ranks) {
  if (requested > 0) return requested;
  const int64_t cores = std::max<unsigned>(1, std::thread::hardware_concurrency());
  return std::max<int64_t>(1, cores / std::max<int64_t>(1, local_ranks));
}

}  // namespace lt

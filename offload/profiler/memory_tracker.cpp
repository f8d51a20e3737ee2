#include "offload/profiler/memory_tracker.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <cstring>

#include "core/util/resources.h"

#ifdef LT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace lt {
namespace {

// Each block carries its size in a header of one alignment unit, so the
// data keeps LibTorch's 64-byte alignment and the plain deleter (which
// raw_allocate users need) can find the size again.
constexpr size_t kHeader = 64;

std::atomic<int64_t> g_current{0}, g_peak{0};

void count(int64_t bytes) {
  const int64_t now = g_current.fetch_add(bytes) + bytes;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

void release(void* data) {
  if (!data) return;
  char* block = static_cast<char*>(data) - kHeader;
  int64_t bytes;
  std::memcpy(&bytes, block, sizeof(bytes));
  count(-bytes);
  c10::free_cpu(block);
}

class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    char* block = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    const int64_t bytes = static_cast<int64_t>(n);
    std::memcpy(block, &bytes, sizeof(bytes));
    count(bytes);
    void* data = block + kHeader;
    return {data, data, &release, at::Device(at::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

}  // namespace

void track_device_memory() {
  static CountingAllocator allocator;
  static const bool installed = (c10::SetCPUAllocator(&allocator, /*priority=*/1), true);
  (void)installed;
}

int64_t device_bytes(const at::Device& device) {
#ifdef LT_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current;
  }
#endif
  return g_current.load();
}

// On CUDA the caching allocator keeps the peak (resources.h reads it).
int64_t device_peak_bytes(const at::Device& device) {
  return device.is_cuda() ? peak_memory_bytes(device) : g_peak.load();
}

void reset_device_peak(const at::Device& device) {
  if (device.is_cuda()) reset_peak_memory(device);
  else g_peak.store(g_current.load());
}

}  // namespace lt

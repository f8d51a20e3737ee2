#include "core/util/bf16_support.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "core/util/resources.h"

namespace lt {

bool bf16_is_fast(DeviceKind device) {
  if (device == DeviceKind::cuda) return true;
  // LT_CPU_BF16=0 plays a CPU without them (tests of the refusal), =1 one
  // with them (tests of bf16 numerics on any CPU, emulated where need be).
  if (const char* forced = std::getenv("LT_CPU_BF16");
      forced && (!std::strcmp(forced, "0") || !std::strcmp(forced, "1")))
    return forced[0] == '1';
  // oneDNN's bf16 GEMMs on other CPUs emulate through fp32 and run slower than it.
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
}

const CpuRates& cpu_matmul_rates() {
  // Once for each thread count (the recipe's load may run with every core,
  // a rank's training with its share).
  static std::map<int, CpuRates> measured;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, fresh] = measured.try_emplace(at::get_num_threads());
  if (fresh) {
    it->second.fp32 = measure_matmul_peak(at::kCPU, at::kFloat);
    if (bf16_is_fast(DeviceKind::cpu)) it->second.bf16 = measure_matmul_peak(at::kCPU, at::kBFloat16);
  }
  return it->second;
}

double peak_matmul_flops(const c10::Device& device) {
  if (device.is_cuda()) return measure_matmul_peak(device, at::kBFloat16);
  const auto& rates = cpu_matmul_rates();
  return std::max(rates.fp32, rates.bf16);
}

Precision resolve_precision(Precision precision, DeviceKind device) {
  if (precision != Precision::automatic) return precision;
  if (device == DeviceKind::cuda) return Precision::bf16;
  if (!bf16_is_fast(device)) return Precision::fp32;
  if (std::getenv("LT_CPU_BF16")) return Precision::bf16;  // forced: no measuring
  return faster_precision(cpu_matmul_rates());
}

Precision faster_precision(const CpuRates& rates) {
  return rates.bf16 > 0 && rates.bf16 >= kBf16Keeps * rates.fp32 ? Precision::bf16 : Precision::fp32;
}

}  // namespace lt

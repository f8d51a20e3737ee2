#include "core/util/bf16_support.h"

#include <cstdlib>
#include <cstring>

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

Precision resolve_precision(Precision precision, DeviceKind device) {
  if (precision != Precision::automatic) return precision;
  return bf16_is_fast(device) ? Precision::bf16 : Precision::fp32;
}

}  // namespace lt

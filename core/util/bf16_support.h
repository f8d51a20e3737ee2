// Where bf16 compute pays (train.precision: auto) and where it runs at all.
#pragma once
#include <c10/core/Device.h>

#include "core/config/config.h"

namespace lt {

// A CUDA device (bf16 tensor cores from Ampere on; checked when the trainer
// opens it), or a CPU with AMX-BF16 or AVX512-BF16 matrix instructions.
bool bf16_is_fast(DeviceKind device);

// This CPU's matrix-product rates in fp32 and bf16 (FLOP/s), measured once
// a process for each intra-op thread count; bf16 is 0 where the CPU has no
// bf16 instructions.
struct CpuRates {
  double fp32 = 0, bf16 = 0;
};
const CpuRates& cpu_matmul_rates();

// The fastest matrix-product rate `device` offers (FLOP/s), MFU's
// denominator whatever a run computes in: a GPU's bf16 (measured each
// call), a CPU's faster of cpu_matmul_rates().
double peak_matmul_flops(const c10::Device& device);

// What auto computes in on a CPU of these rates: bf16 where its products run
// at least kBf16Keeps of fp32's, since bf16 also halves the bytes every
// weight and activation moves. Measured (docs/benchmarks.md): AMX (bf16
// products several times fp32's) and an AMD EPYC with AVX512-BF16 (about
// equal) train 1.8-2x faster in bf16; a Xeon with AVX512-BF16 alone (about
// half) trains 1.7x slower. fp32 where the CPU has no bf16 instructions.
constexpr double kBf16Keeps = 0.8;
Precision faster_precision(const CpuRates& rates);

// train.precision as it runs on `device`: auto becomes bf16 on CUDA, on a
// CPU faster_precision of its measured rates. fp32 and bf16 stay.
Precision resolve_precision(Precision precision, DeviceKind device);

}  // namespace lt

// Where bf16 compute pays (train.precision: auto) and where it runs at all.
#pragma once
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

// train.precision as it runs on `device`: auto becomes bf16 on CUDA, and on
// a CPU with bf16 instructions where its bf16 products measure at least as
// fast as fp32's (AMX; AVX512-BF16 alone runs bf16 at about half fp32's
// rate); else fp32. fp32 and bf16 stay.
Precision resolve_precision(Precision precision, DeviceKind device);

}  // namespace lt

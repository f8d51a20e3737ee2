// Where bf16 compute pays (train.precision: auto) and where it runs at all.
#pragma once
#include "core/config/config.h"

namespace lt {

// A CUDA device (bf16 tensor cores from Ampere on; checked when the trainer
// opens it), or a CPU with AMX-BF16 or AVX512-BF16 matrix instructions.
bool bf16_is_fast(DeviceKind device);

// train.precision as it runs on `device`: auto becomes bf16 where bf16 is
// fast, else fp32; fp32 and bf16 stay.
Precision resolve_precision(Precision precision, DeviceKind device);

}  // namespace lt

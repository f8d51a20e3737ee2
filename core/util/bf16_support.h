// Where bf16 compute pays (train.precision: auto) and where it runs at all.
#pragma once
#include <string>

namespace lt {

// A CUDA device (bf16 tensor cores from Ampere on; checked when the trainer
// opens it), or a CPU with AMX-BF16 or AVX512-BF16 matrix instructions.
bool bf16_is_fast(const std::string& device);

// train.precision as it runs on `device`: auto becomes bf16 where bf16 is
// fast, else fp32; fp32 and bf16 stay.
std::string resolve_precision(const std::string& precision, const std::string& device);

}  // namespace lt

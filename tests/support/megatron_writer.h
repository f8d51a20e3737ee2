// Writes indexed datasets byte for byte as Megatron's MMapIndexedDatasetBuilder
// (tools/preprocess_data.py) does, so the reader is tested against the format.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lt::testing {

// documents: each a list of sequences (sentences) of token ids.
// dtype_code: Megatron's code (1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 8 u16).
void write_megatron_dataset(const std::string& prefix, const std::vector<std::vector<std::vector<int64_t>>>& documents,
                            uint8_t dtype_code);

}  // namespace lt::testing

// The safetensors format: u64 header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw little-endian bytes.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace lt {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct WrittenFile {
  uint64_t bytes = 0;
  std::string checksum;  // lt::Checksum of the bytes written
};

// Writes and fsyncs the file. Tensors are copied to the host as needed.
WrittenFile save_safetensors(const std::string& path, const NamedTensors& tensors,
                             const std::map<std::string, std::string>& metadata = {});

// Reads every tensor (F32, F16, BF16, I64, I32, U8, ...); fails naming the
// file on a truncated or malformed one.
std::map<std::string, at::Tensor> load_safetensors(const std::string& path);

}  // namespace lt

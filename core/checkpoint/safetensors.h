// The safetensors format: u64 header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw little-endian bytes.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/util/mapped_file.h"

namespace lt {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct WrittenFile {
  uint64_t bytes = 0;
  std::string checksum;  // lt::Checksum of the bytes written
};

// Writes and fsyncs the file. Tensors are copied to the host as needed.
WrittenFile save_safetensors(const std::string& path, const NamedTensors& tensors,
                             const std::map<std::string, std::string>& metadata = {});

// A safetensors file memory-mapped with its header checked: every tensor's
// dtype (F32, F16, BF16, I64, I32, U8, ...), shape and byte range. Errors
// name the file and the tensor.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  // A read-only view of the mapped bytes, valid while this object lives:
  // narrowing it and converting reads only the pages of the slice.
  at::Tensor view(const std::string& name) const;
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  std::vector<std::string> names() const;
  const std::string& path() const { return file_.path(); }

 private:
  struct Entry {
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    size_t offset;  // from the start of the file
    size_t bytes;
  };
  static Entry parse_entry(const std::string& where, const nlohmann::json& entry, uint64_t data_start,
                           uint64_t data_bytes);
  void refuse_overlaps() const;

  MappedFile file_;
  std::map<std::string, Entry> entries_;
};

// Reads every tensor into memory.
std::map<std::string, at::Tensor> load_safetensors(const std::string& path);

}  // namespace lt

#include "core/checkpoint/safetensors.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/util/checksum.h"
#include "core/util/error.h"
#include "core/util/mapped_file.h"

namespace lt {
namespace {

const std::vector<std::pair<std::string, at::ScalarType>>& dtype_names() {
  static const std::vector<std::pair<std::string, at::ScalarType>> names = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I64", at::kLong},
      {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},  {"U8", at::kByte},        {"BOOL", at::kBool}};
  return names;
}

std::string dtype_name(at::ScalarType type) {
  for (const auto& [name, t] : dtype_names())
    if (t == type) return name;
  fail(std::string("safetensors: unsupported dtype ") + c10::toString(type));
}

at::ScalarType dtype_from(const std::string& path, const std::string& name) {
  for (const auto& [n, t] : dtype_names())
    if (n == name) return t;
  fail(path + ": unsupported dtype '" + name + "'");
}

void write_all(std::FILE* f, const void* data, size_t size, const std::string& path, Checksum& sum) {
  if (size && std::fwrite(data, 1, size, f) != size)
    fail(path + ": write failed: " + std::strerror(errno) + " (is the disk full?)");
  sum.update(data, size);
}

}  // namespace

WrittenFile save_safetensors(const std::string& path, const NamedTensors& tensors,
                             const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> host;
  size_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    auto t = tensor.detach().to(at::kCPU).contiguous();
    const size_t bytes = t.numel() * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  const uint64_t length = text.size();

  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(path + ": cannot create: " + std::strerror(errno));
  Checksum sum;
  write_all(f, &length, sizeof(length), path, sum);
  write_all(f, text.data(), text.size(), path, sum);
  for (const auto& t : host) write_all(f, t.data_ptr(), t.numel() * t.element_size(), path, sum);
  const bool ok = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) fail(path + ": flush failed: " + std::strerror(errno) + " (is the disk full?)");
  return {sizeof(length) + text.size() + offset, sum.hex()};
}

std::map<std::string, at::Tensor> load_safetensors(const std::string& path) {
  MappedFile file(path);
  uint64_t length = 0;
  if (file.size() < 8) fail(path + ": truncated safetensors file (" + std::to_string(file.size()) + " bytes)");
  std::memcpy(&length, file.data(), 8);
  if (length > file.size() - 8) fail(path + ": truncated safetensors file (header runs past the end)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file.data() + 8, file.data() + 8 + length);
  } catch (const nlohmann::json::exception& e) {
    fail(path + ": malformed safetensors header: " + e.what());
  }
  const size_t data_start = 8 + length;
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    try {
      const auto type = dtype_from(path, entry.at("dtype").get<std::string>());
      const auto shape = entry.at("shape").get<std::vector<int64_t>>();
      const auto range = entry.at("data_offsets").get<std::vector<uint64_t>>();
      auto t = at::empty(shape, at::TensorOptions().dtype(type));
      const uint64_t bytes = t.numel() * t.element_size();
      if (range.size() != 2 || range[1] - range[0] != bytes || data_start + range[1] > file.size())
        fail(path + ": tensor '" + name + "' lies outside the file or has the wrong size (truncated file?)");
      std::memcpy(t.data_ptr(), file.data() + data_start + range[0], bytes);
      out.emplace(name, t);
    } catch (const nlohmann::json::exception& e) {
      fail(path + ": malformed entry for tensor '" + name + "': " + e.what());
    }
  }
  return out;
}

}  // namespace lt

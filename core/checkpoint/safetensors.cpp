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

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  uint64_t length = 0;
  if (file_.size() < 8) fail(path + ": truncated safetensors file (" + std::to_string(file_.size()) + " bytes)");
  std::memcpy(&length, file_.data(), 8);
  if (length > file_.size() - 8) fail(path + ": truncated safetensors file (header runs past the end)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file_.data() + 8, file_.data() + 8 + length);
  } catch (const nlohmann::json::exception& e) {
    fail(path + ": malformed safetensors header: " + e.what());
  }
  const size_t data_start = 8 + length;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    try {
      Entry e{dtype_from(path + ": tensor '" + name + "'", entry.at("dtype").get<std::string>()),
              entry.at("shape").get<std::vector<int64_t>>(), 0};
      const auto range = entry.at("data_offsets").get<std::vector<uint64_t>>();
      const uint64_t bytes = c10::multiply_integers(e.shape) * c10::elementSize(e.dtype);
      if (range.size() != 2 || range[1] < range[0] || range[1] - range[0] != bytes ||
          data_start + range[1] > file_.size())
        fail(path + ": tensor '" + name + "' lies outside the file or has the wrong size (truncated file?)");
      e.offset = data_start + range[0];
      entries_.emplace(name, std::move(e));
    } catch (const nlohmann::json::exception& e) {
      fail(path + ": malformed entry for tensor '" + name + "': " + e.what());
    }
  }
}

at::Tensor SafetensorsFile::view(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) fail(path() + ": no tensor '" + name + "'");
  const Entry& e = it->second;
  auto* data = const_cast<uint8_t*>(file_.data() + e.offset);
  const auto options = at::TensorOptions().dtype(e.dtype);
  // A writer may leave a tensor unaligned for its element type: copy it.
  if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(e.dtype) != 0) {
    auto t = at::empty(e.shape, options);
    std::memcpy(t.data_ptr(), data, t.numel() * t.element_size());
    return t;
  }
  return at::from_blob(data, e.shape, options);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

std::map<std::string, at::Tensor> load_safetensors(const std::string& path) {
  const SafetensorsFile file(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& name : file.names()) out.emplace(name, file.view(name).clone());
  return out;
}

}  // namespace lt

#include "core/checkpoint/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/util/checksum.h"
#include "core/util/error.h"
#include "core/util/json_input.h"
#include "core/util/mapped_file.h"

namespace lt {
namespace {

const std::vector<std::pair<std::string, at::ScalarType>>& dtype_names() {
  static const std::vector<std::pair<std::string, at::ScalarType>> names = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I64", at::kLong},
      {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},  {"U8", at::kByte},       {"BOOL", at::kBool}};
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
  fail(path + ": unsupported dtype '" + excerpt(name) + "'");
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
    header[name] = {
        {"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  const uint64_t length = text.size();

  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!file) fail(path + ": cannot create: " + std::strerror(errno));
  std::FILE* f = file.get();
  Checksum sum;
  write_all(f, &length, sizeof(length), path, sum);
  write_all(f, text.data(), text.size(), path, sum);
  for (const auto& t : host) write_all(f, t.data_ptr(), t.numel() * t.element_size(), path, sum);
  if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0)
    fail(path + ": flush failed: " + std::strerror(errno) + " (is the disk full?)");
  if (std::fclose(file.release()) != 0) fail(path + ": close failed: " + std::strerror(errno) + " (is the disk full?)");
  return {sizeof(length) + text.size() + offset, sum.hex()};
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  uint64_t length = 0;
  if (file_.size() < 8) fail(path + ": truncated safetensors file (" + std::to_string(file_.size()) + " bytes)");
  std::memcpy(&length, file_.data(), 8);
  if (length > file_.size() - 8) fail(path + ": truncated safetensors file (header runs past the end)");
  const auto header =
      parse_json(std::string_view(reinterpret_cast<const char*>(file_.data()) + 8, static_cast<size_t>(length)),
                 path + ": safetensors header");
  if (!header.is_object()) fail(path + ": malformed safetensors header: not a JSON object");
  const uint64_t data_bytes = file_.size() - 8 - length;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    entries_.emplace(name, parse_entry(path + ": tensor '" + excerpt(name) + "'", entry, 8 + length, data_bytes));
  }
  refuse_overlaps();
}

// Two tensors sharing bytes would alias: writing one would change the
// other (safetensors' own reader refuses them too).
void SafetensorsFile::refuse_overlaps() const {
  std::vector<std::pair<const std::string*, const Entry*>> by_offset;
  for (const auto& [name, entry] : entries_) by_offset.emplace_back(&name, &entry);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.second->offset < b.second->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto& [name, entry] = by_offset[i];
    const auto& [previous_name, previous] = by_offset[i - 1];
    if (previous->offset + previous->bytes > entry->offset)
      fail(path() + ": tensors '" + excerpt(*previous_name) + "' and '" + excerpt(*name) +
           "' overlap in data_offsets: the file is damaged or was not written as safetensors");
  }
}

// One tensor's entry: a known dtype, a shape of non-negative integers, and
// a byte range inside the data that holds exactly shape x dtype bytes, all
// checked without overflow.
SafetensorsFile::Entry SafetensorsFile::parse_entry(const std::string& where, const nlohmann::json& entry,
                                                    uint64_t data_start, uint64_t data_bytes) {
  auto bad = [&](const std::string& what) -> void { fail(where + ": " + what); };
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
    bad("malformed entry: needs dtype, shape and data_offsets");
  if (!entry.at("dtype").is_string()) bad("dtype is not a string");
  Entry e{dtype_from(where, entry.at("dtype").get<std::string>()), {}, 0, 0};
  const auto& shape = entry.at("shape");
  if (!shape.is_array()) bad("shape is not a list");
  uint64_t elements = 1;
  for (const auto& size : shape) {
    if (!size.is_number_integer() || (!size.is_number_unsigned() && size.get<int64_t>() < 0))
      bad("shape " + shown(shape) + " has a size that is not a non-negative integer");
    if (size.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ||
        __builtin_mul_overflow(elements, size.get<uint64_t>(), &elements))
      bad("shape " + shown(shape) + " is too large");
    e.shape.push_back(size.get<int64_t>());
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(elements, static_cast<uint64_t>(c10::elementSize(e.dtype)), &bytes))
    bad("shape is too large");
  const auto& range = entry.at("data_offsets");
  if (!range.is_array() || range.size() != 2 || !range[0].is_number_unsigned() || !range[1].is_number_unsigned())
    bad("data_offsets " + shown(range, 60) + " is not two non-negative integers");
  const uint64_t begin = range[0].get<uint64_t>(), end = range[1].get<uint64_t>();
  if (begin > end || end > data_bytes)
    bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] lie outside the " +
        std::to_string(data_bytes) + " data bytes of the file (truncated file?)");
  if (end - begin != bytes)
    bad(std::to_string(end - begin) + " bytes in data_offsets, but its shape and dtype make " + std::to_string(bytes));
  e.offset = data_start + begin;
  e.bytes = bytes;
  return e;
}

at::Tensor SafetensorsFile::view(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) fail(path() + ": no tensor '" + name + "'");
  const Entry& e = it->second;
  auto* data = const_cast<uint8_t*>(file_.data() + e.offset);
  const auto options = at::TensorOptions().dtype(e.dtype);
  // A writer may leave a tensor unaligned for its element type: copy it.
  if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(e.dtype) != 0 && c10::multiply_integers(e.shape) > 0) {
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

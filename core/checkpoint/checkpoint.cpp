#include "core/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/checkpoint/safetensors.h"
#include "core/util/checksum.h"
#include "core/util/error.h"
#include "core/util/fault_injection.h"

namespace lt {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "longtrain-checkpoint";
constexpr int kVersion = 3;  // 3: weights and optimizer state as slices of full tensors

std::string step_name(int64_t step) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "step_%08lld", static_cast<long long>(step));
  return buffer;
}

std::optional<int64_t> parse_step(const std::string& name) {
  static const std::regex pattern("step_([0-9]+)");
  std::smatch match;
  if (!std::regex_match(name, match, pattern)) return std::nullopt;
  return std::stoll(match[1]);
}

std::string to_hex(const at::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  auto t = bytes.contiguous();
  const auto* p = t.data_ptr<uint8_t>();
  std::string out;
  for (int64_t i = 0; i < t.numel(); ++i) out += digits[p[i] >> 4], out += digits[p[i] & 15];
  return out;
}

at::Tensor from_hex(const std::string& text) {
  auto t = at::empty({static_cast<int64_t>(text.size() / 2)}, at::kByte);
  auto* p = t.data_ptr<uint8_t>();
  for (size_t i = 0; i + 1 < text.size(); i += 2) p[i / 2] = static_cast<uint8_t>(std::stoi(text.substr(i, 2), nullptr, 16));
  return t;
}

void write_text_synced(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(path + ": cannot create: " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                  ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) fail(path + ": write failed: " + std::strerror(errno) + " (is the disk full?)");
}

void sync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::vector<int64_t> full_shape(const TensorSlice& slice, at::IntArrayRef local) {
  auto shape = local.vec();
  shape[slice.dim] = slice.full;
  return shape;
}

// What a file holds of a tensor: elements [start, end) of the flattened local
// slice full.narrow(dim, offset, local[dim]) of parameter `name`.
nlohmann::json slice_record(const std::string& name, const TensorSlice& slice, at::IntArrayRef local, int64_t start,
                            int64_t end) {
  return {{"name", name}, {"shape", full_shape(slice, local)}, {"local", local.vec()}, {"dim", slice.dim},
          {"offset", slice.offset}, {"start", start}, {"end", end}};
}

NamedTensors model_tensors(LlamaForCausalLMImpl& model, nlohmann::json& records) {
  NamedTensors out;
  for (const auto& item : model.named_parameters()) {
    const auto& p = item.value();
    out.emplace_back(item.key(), p);
    records.push_back(slice_record(item.key(), model.slice_of(item.key()), p.sizes(), 0, p.numel()));
  }
  return out;
}

nlohmann::json read_manifest(const std::string& path) {
  const std::string file = path + "/manifest.json";
  std::ifstream in(file);
  if (!in) fail(file + ": missing; " + path + " is not a complete checkpoint");
  try {
    auto manifest = nlohmann::json::parse(in);
    if (manifest.value("format", "") != kFormat) fail(file + ": not a longtrain checkpoint manifest");
    if (manifest.value("version", 0) != kVersion)
      fail(file + ": checkpoint format version " + std::to_string(manifest.value("version", 0)) + ", this build reads " +
           std::to_string(kVersion) + ": load it with the longtrain that wrote it");
    return manifest;
  } catch (const nlohmann::json::exception& e) {
    fail(file + ": corrupt manifest: " + e.what());
  }
}

void verify_file(const std::string& path, const std::string& name, const nlohmann::json& manifest) {
  const std::string file = path + "/" + name;
  if (!manifest.at("files").contains(name)) fail(path + "/manifest.json: does not list " + name);
  const auto& entry = manifest.at("files").at(name);
  if (!fs::exists(file)) fail(file + ": missing from the checkpoint; resume from an older checkpoint");
  const auto bytes = static_cast<uintmax_t>(entry.at("bytes").get<int64_t>());
  if (fs::file_size(file) != bytes)
    fail(file + ": " + std::to_string(fs::file_size(file)) + " bytes, the manifest says " + std::to_string(bytes) +
         " (truncated); resume from an older checkpoint");
  const std::string sum = file_checksum(file);
  if (sum != entry.at("checksum").get<std::string>())
    fail(file + ": checksum " + sum + " does not match the manifest (" + entry.at("checksum").get<std::string>() +
         "): the file is corrupt; resume from an older checkpoint");
}

// A whole segment keeps its parameter's shape (readable by any tool); a
// slice is stored flat.
NamedTensors optimizer_tensors(const AdamW& optimizer, LlamaForCausalLMImpl& model, nlohmann::json& records) {
  NamedTensors out;
  for (const auto& s : optimizer.state()) {
    const auto& seg = s.segment;
    const bool whole = seg.start == 0 && seg.end == seg.param.numel();
    out.emplace_back(seg.name + ".exp_avg", whole ? s.exp_avg.view(seg.param.sizes()) : s.exp_avg);
    out.emplace_back(seg.name + ".exp_avg_sq", whole ? s.exp_avg_sq.view(seg.param.sizes()) : s.exp_avg_sq);
    records.push_back(slice_record(seg.name, model.slice_of(seg.name), seg.param.sizes(), seg.start, seg.end));
  }
  return out;
}

// What one rank wrote, as JSON text for the gather to rank 0.
std::string write_part(const std::string& temp, LlamaForCausalLMImpl& model, const AdamW& optimizer,
                       const CheckpointStore::Part& part) {
  nlohmann::json record = {{"files", nlohmann::json::object()}, {"model", nlohmann::json::object()},
                           {"optimizer", nlohmann::json::object()}};
  auto write = [&](const std::string& section, const std::string& file, const NamedTensors& tensors,
                   const nlohmann::json& slices, const std::map<std::string, std::string>& metadata) {
    const auto written = save_safetensors(temp + "/" + file, tensors, metadata);
    record["files"][file] = {{"bytes", written.bytes}, {"checksum", written.checksum}};
    record[section][file] = slices;
  };
  if (!part.model_file.empty()) {
    nlohmann::json slices = nlohmann::json::array();
    auto tensors = model_tensors(model, slices);
    write("model", part.model_file, tensors, slices, {{"format", "pt"}});
  }
  if (!part.optimizer_file.empty()) {
    nlohmann::json slices = nlohmann::json::array();
    auto tensors = optimizer_tensors(optimizer, model, slices);
    write("optimizer", part.optimizer_file, tensors, slices, {});
  }
  return record.dump();
}

// Reads any slice of a tensor from whichever files hold parts of it: the
// full tensor is assembled from the parts (of whatever tp, pp, dp or ZeRO
// layout wrote them), then cut the way this rank holds it.
class SliceReader {
 public:
  // `section`: "model" or "optimizer" in the manifest.
  SliceReader(std::string path, const nlohmann::json& manifest, const std::string& section)
      : path_(std::move(path)), manifest_(manifest) {
    for (const auto& [file, records] : manifest.at(section).at("shards").items())
      for (const auto& r : records) records_[r.at("name").get<std::string>()].emplace_back(file, &r);
  }

  // Elements [start, end) of the flattened slice `want` (local shape `local`)
  // of tensor `key` (in the files) of parameter `name`.
  at::Tensor read(const std::string& name, const std::string& key, const TensorSlice& want, at::IntArrayRef local,
                  int64_t start, int64_t end) {
    auto [full, covered] = assemble(name, key, full_shape(want, local));
    if (!covered.narrow(want.dim, want.offset, local[want.dim]).all().item<bool>())
      fail(path_ + ": '" + key + "' is not complete in the checkpoint: a file is missing from its manifest");
    return full.narrow(want.dim, want.offset, local[want.dim]).reshape(-1).narrow(0, start, end - start);
  }

 private:
  std::pair<at::Tensor, at::Tensor> assemble(const std::string& name, const std::string& key,
                                             const std::vector<int64_t>& shape) {
    if (cached_key_ == key) return cached_;
    // Each writer's local tensor, gathered from its (ZeRO) segments; copies
    // of a slice (replicated weights) may come from several files.
    struct Part {
      nlohmann::json record;
      at::Tensor flat, filled;
    };
    std::map<std::string, Part> parts;
    for (const auto& [file, record] : records_[name]) {
      const auto& r = *record;
      const auto stored = r.at("shape").get<std::vector<int64_t>>();
      if (stored != shape)
        fail(path_ + "/" + file + ": '" + name + "' has shape " + c10::str(at::IntArrayRef(stored)) +
             ", the model " + c10::str(at::IntArrayRef(shape)) + ": the recipe's model differs from the checkpoint's");
      auto& part = parts[std::to_string(r.at("dim").get<int64_t>()) + ":" + std::to_string(r.at("offset").get<int64_t>())];
      const auto local = r.at("local").get<std::vector<int64_t>>();
      if (!part.flat.defined()) {
        part.record = r;
        part.flat = at::empty({c10::multiply_integers(local)}, at::kFloat);
        part.filled = at::zeros({part.flat.numel()}, at::kBool);
      }
      const int64_t start = r.at("start").get<int64_t>(), end = r.at("end").get<int64_t>();
      part.flat.narrow(0, start, end - start).copy_(tensors(file).at(key).reshape(-1));
      part.filled.narrow(0, start, end - start).fill_(true);
    }
    if (parts.empty()) fail(path_ + ": no tensor '" + key + "': the checkpoint is from another model");
    auto full = at::empty(shape, at::kFloat);
    auto covered = at::zeros(shape, at::kBool);
    for (auto& [where, part] : parts) {
      if (!part.filled.all().item<bool>()) continue;
      const auto local = part.record.at("local").get<std::vector<int64_t>>();
      const int64_t dim = part.record.at("dim").get<int64_t>(), offset = part.record.at("offset").get<int64_t>();
      full.narrow(dim, offset, local[dim]).copy_(part.flat.view(local));
      covered.narrow(dim, offset, local[dim]).fill_(true);
    }
    cached_key_ = key;
    cached_ = {full, covered};
    return cached_;
  }

  const std::map<std::string, at::Tensor>& tensors(const std::string& file) {
    auto it = loaded_.find(file);
    if (it != loaded_.end()) return it->second;
    verify_file(path_, file, manifest_);
    return loaded_[file] = load_safetensors(path_ + "/" + file);
  }

  std::string path_;
  const nlohmann::json& manifest_;
  // Parameter name -> (file, record) of every part of it.
  std::map<std::string, std::vector<std::pair<std::string, const nlohmann::json*>>> records_;
  std::map<std::string, std::map<std::string, at::Tensor>> loaded_;
  std::string cached_key_;
  std::pair<at::Tensor, at::Tensor> cached_;
};

}  // namespace

CheckpointStore::CheckpointStore(std::string dir, int64_t keep) : dir_(std::move(dir)), keep_(keep) {}

std::string CheckpointStore::save(LlamaForCausalLMImpl& model, const AdamW& optimizer, const TrainState& state,
                                  Communicator& world, const Part& part) {
  const std::string final_path = dir_ + "/" + step_name(state.step);
  const std::string temp = final_path + ".tmp";
  if (world.rank() == 0) {
    fs::create_directories(dir_);
    fs::remove_all(temp);
    fs::create_directories(temp);
  }
  world.barrier();
  const std::string first_file = part.model_file.empty() ? part.optimizer_file : part.model_file;
  if (!first_file.empty() && fault_at(world.rank(), state.step) == "diskfull") {
    std::ofstream(temp + "/" + first_file) << "partial";  // what a full disk leaves behind
    fail(temp + "/" + first_file + ": write failed: " + std::strerror(ENOSPC) + " (is the disk full?) [LT_FAULT]");
  }
  const auto records = world.all_gather(write_part(temp, model, optimizer, part));
  if (world.rank() == 0) {
    nlohmann::ordered_json manifest = {{"format", kFormat},
                                       {"version", kVersion},
                                       {"step", state.step},
                                       {"data", {{"document", state.data.document}, {"offset", state.data.offset}}},
                                       {"rng_cpu", to_hex(state.rng)},
                                       {"model", {{"shards", nlohmann::json::object()}}},
                                       {"optimizer", {{"steps", optimizer.steps()}, {"shards", nlohmann::json::object()}}},
                                       {"files", nlohmann::json::object()}};
    for (const auto& text : records) {
      const auto record = nlohmann::json::parse(text);
      for (const auto& [name, entry] : record.at("files").items()) manifest["files"][name] = entry;
      for (const auto& section : {"model", "optimizer"})
        for (const auto& [name, slices] : record.at(section).items()) manifest[section]["shards"][name] = slices;
    }
    write_text_synced(temp + "/manifest.json", manifest.dump(2));
    sync_directory(temp);
    fs::remove_all(final_path);
    fs::rename(temp, final_path);  // the commit point
    sync_directory(dir_);
    prune();
  }
  world.barrier();
  return final_path;
}

void CheckpointStore::prune() const {
  std::vector<int64_t> steps;
  for (const auto& entry : fs::directory_iterator(dir_))
    if (auto step = parse_step(entry.path().filename().string())) steps.push_back(*step);
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = static_cast<size_t>(keep_); i < steps.size(); ++i) fs::remove_all(dir_ + "/" + step_name(steps[i]));
}

std::optional<std::string> CheckpointStore::latest() const {
  if (!fs::is_directory(dir_)) return std::nullopt;
  std::optional<int64_t> best;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    auto step = parse_step(entry.path().filename().string());
    if (step && fs::exists(entry.path() / "manifest.json") && (!best || *step > *best)) best = step;
  }
  if (!best) return std::nullopt;
  return dir_ + "/" + step_name(*best);
}

void CheckpointStore::remove_partial(Communicator& world) const {
  if (world.rank() == 0 && fs::is_directory(dir_))
    for (const auto& entry : fs::directory_iterator(dir_))
      if (entry.path().extension() == ".tmp") fs::remove_all(entry.path());
  world.barrier();
}

std::string resolve_checkpoint(const std::string& path) {
  if (!fs::exists(path)) fail(path + ": checkpoint not found");
  if (fs::exists(path + "/manifest.json")) return path;
  auto latest = CheckpointStore(path, 1).latest();
  if (!latest) fail(path + ": contains no complete checkpoint (no step_*/manifest.json)");
  return *latest;
}

void load_checkpoint(const std::string& path, LlamaForCausalLMImpl& model, AdamW* optimizer, TrainState* state) {
  const auto manifest = read_manifest(path);
  std::map<std::string, at::Tensor> params;
  for (const auto& item : model.named_parameters()) params[item.key()] = item.value();
  at::NoGradGuard no_grad;
  {
    SliceReader weights(path, manifest, "model");
    for (auto& [name, param] : params)
      param.copy_(weights.read(name, name, model.slice_of(name), param.sizes(), 0, param.numel()).view(param.sizes()));
  }
  if (optimizer) {
    SliceReader moments(path, manifest, "optimizer");
    auto read = [&](const std::string& name, const std::string& moment, int64_t start, int64_t end) {
      const auto& param = params.at(name);
      return moments.read(name, name + "." + moment, model.slice_of(name), param.sizes(), start, end).clone();
    };
    optimizer->load_state(read, manifest.at("optimizer").at("steps").get<int64_t>());
  }
  if (state) {
    state->step = manifest.at("step").get<int64_t>();
    state->data = {manifest.at("data").at("document").get<int64_t>(), manifest.at("data").at("offset").get<int64_t>()};
    state->rng = from_hex(manifest.at("rng_cpu").get<std::string>());
  }
}

}  // namespace lt

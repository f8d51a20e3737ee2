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

namespace lt {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "longtrain-checkpoint";
constexpr int kVersion = 1;

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

NamedTensors model_tensors(LlamaForCausalLMImpl& model) {
  NamedTensors out;
  for (const auto& item : model.named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

nlohmann::json read_manifest(const std::string& path) {
  const std::string file = path + "/manifest.json";
  std::ifstream in(file);
  if (!in) fail(file + ": missing; " + path + " is not a complete checkpoint");
  try {
    auto manifest = nlohmann::json::parse(in);
    if (manifest.value("format", "") != kFormat || manifest.value("version", 0) != kVersion)
      fail(file + ": not a longtrain checkpoint manifest (format/version)");
    return manifest;
  } catch (const nlohmann::json::exception& e) {
    fail(file + ": corrupt manifest: " + e.what());
  }
}

void verify_files(const std::string& path, const nlohmann::json& manifest) {
  for (const auto& [name, entry] : manifest.at("files").items()) {
    const std::string file = path + "/" + name;
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
}

}  // namespace

CheckpointStore::CheckpointStore(std::string dir, int64_t keep) : dir_(std::move(dir)), keep_(keep) {}

std::string CheckpointStore::save(LlamaForCausalLMImpl& model, const AdamW& optimizer, const TrainState& state) {
  fs::create_directories(dir_);
  const std::string final_path = dir_ + "/" + step_name(state.step);
  const std::string temp = final_path + ".tmp";
  fs::remove_all(temp);
  fs::create_directories(temp);

  const auto weights = save_safetensors(temp + "/model.safetensors", model_tensors(model), {{"format", "pt"}});
  const auto moments = save_safetensors(temp + "/optimizer.safetensors", optimizer.state());
  nlohmann::ordered_json manifest = {{"format", kFormat},
                                     {"version", kVersion},
                                     {"step", state.step},
                                     {"optimizer_steps", optimizer.steps()},
                                     {"data", {{"document", state.data.document}, {"offset", state.data.offset}}},
                                     {"rng_cpu", to_hex(state.rng)}};
  for (const auto& [name, file] : {std::pair{"model.safetensors", weights}, std::pair{"optimizer.safetensors", moments}})
    manifest["files"][name] = {{"bytes", file.bytes}, {"checksum", file.checksum}};
  write_text_synced(temp + "/manifest.json", manifest.dump(2));
  sync_directory(temp);

  fs::remove_all(final_path);
  fs::rename(temp, final_path);  // the commit point
  sync_directory(dir_);

  std::vector<int64_t> steps;
  for (const auto& entry : fs::directory_iterator(dir_))
    if (auto step = parse_step(entry.path().filename().string())) steps.push_back(*step);
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = static_cast<size_t>(keep_); i < steps.size(); ++i) fs::remove_all(dir_ + "/" + step_name(steps[i]));
  return final_path;
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

void CheckpointStore::remove_partial() const {
  if (!fs::is_directory(dir_)) return;
  for (const auto& entry : fs::directory_iterator(dir_))
    if (entry.path().extension() == ".tmp") fs::remove_all(entry.path());
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
  verify_files(path, manifest);
  auto weights = load_safetensors(path + "/model.safetensors");
  at::NoGradGuard no_grad;
  for (auto& [name, param] : model_tensors(model)) {
    auto it = weights.find(name);
    if (it == weights.end()) fail(path + "/model.safetensors: no tensor '" + name + "': the checkpoint is from another model");
    if (!it->second.sizes().equals(param.sizes()))
      fail(path + "/model.safetensors: '" + name + "' has shape " + c10::str(it->second.sizes()) + ", the model " +
           c10::str(param.sizes()) + ": the recipe's model differs from the checkpoint's");
    param.copy_(it->second);
  }
  if (optimizer) {
    auto moments = load_safetensors(path + "/optimizer.safetensors");
    for (auto& [name, t] : moments) t = t.to(model.parameters().front().device());
    optimizer->load_state(moments, manifest.at("optimizer_steps").get<int64_t>());
  }
  if (state) {
    state->step = manifest.at("step").get<int64_t>();
    state->data = {manifest.at("data").at("document").get<int64_t>(), manifest.at("data").at("offset").get<int64_t>()};
    state->rng = from_hex(manifest.at("rng_cpu").get<std::string>());
  }
}

}  // namespace lt

#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "core/checkpoint/safetensors.h"
#include "core/checkpoint/slice_runs.h"
#include "core/util/checksum.h"
#include "core/util/error.h"
#include "core/util/fault_injection.h"
#include "core/util/files.h"
#include "core/util/json_input.h"

namespace lt {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "longtrain-checkpoint";
// 3: weights and optimizer state as slices of full tensors; 4: lineage, data
// fingerprint, XXH3 checksums and the manifest's own checksum.
constexpr int kVersion = 4;
constexpr int kOldestReadable = 3;

std::string step_name(int64_t step) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "step_%08lld", static_cast<long long>(step));
  return buffer;
}

// "step_" and 1 to 18 digits (std::regex would double this file's compile time).
std::optional<int64_t> parse_step(const std::string& name) {
  const std::string_view prefix = "step_";
  const std::string_view digits = std::string_view(name).substr(std::min(name.size(), prefix.size()));
  if (!name.starts_with(prefix) || digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(std::string(digits));
}

// Complete checkpoints in `dir` (those with a manifest), oldest first.
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto step = parse_step(entry.path().filename().string());
    if (step && fs::exists(entry.path() / "manifest.json")) out.emplace_back(*step, entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string to_hex(const at::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  auto t = bytes.contiguous();
  const auto* p = t.data_ptr<uint8_t>();
  std::string out;
  for (int64_t i = 0; i < t.numel(); ++i) out += digits[p[i] >> 4], out += digits[p[i] & 15];
  return out;
}

// `text` is checked to be hex digits by check_manifest.
at::Tensor from_hex(const std::string& text) {
  auto t = at::empty({static_cast<int64_t>(text.size() / 2)}, at::kByte);
  auto* p = t.data_ptr<uint8_t>();
  auto digit = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i + 1 < text.size(); i += 2)
    p[i / 2] = static_cast<uint8_t>(digit(text[i]) * 16 + digit(text[i + 1]));
  return t;
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
  return {{"name", name},
          {"shape", full_shape(slice, local)},
          {"local", local.vec()},
          {"dim", slice.dim},
          {"offset", slice.offset},
          {"start", start},
          {"end", end}};
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

// A manifest's fields, checked before any is used: `where` names the file.
class ManifestCheck {
 public:
  explicit ManifestCheck(std::string file) : file_(std::move(file)) {}

  const nlohmann::json& get(const nlohmann::json& j, const std::string& key, bool (nlohmann::json::*is)() const,
                            const char* type, const std::string& at) const {
    if (!j.is_object() || !j.contains(key)) bad(at + key, "is missing");
    const auto& v = j.at(key);
    if (!(v.*is)()) bad(at + key, std::string("should be ") + type + ", is " + shown(v, 40));
    return v;
  }
  int64_t count(const nlohmann::json& j, const std::string& key, const std::string& at) const {
    return non_negative(get(j, key, &nlohmann::json::is_number_integer, "an integer", at), at + key);
  }
  std::vector<int64_t> sizes(const nlohmann::json& j, const std::string& key, const std::string& at) const {
    std::vector<int64_t> out;
    const auto& list = get(j, key, &nlohmann::json::is_array, "a list", at);
    for (size_t i = 0; i < list.size(); ++i)
      out.push_back(non_negative(list[i], at + key + "[" + std::to_string(i) + "]"));
    return out;
  }
  int64_t non_negative(const nlohmann::json& v, const std::string& field) const {
    const bool ok = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX)
                                           : v.is_number_integer() && v.get<int64_t>() >= 0;
    if (!ok) bad(field, "should be a non-negative integer, is " + shown(v, 40));
    return v.get<int64_t>();
  }
  // A file name from the manifest: plain, inside the checkpoint directory.
  void plain_name(const std::string& name, const std::string& at) const {
    if (!is_plain_file_name(name)) bad(at, "is not a plain file name inside the checkpoint directory");
  }
  [[noreturn]] void bad(const std::string& field, const std::string& what) const {
    fail(file_ + ": '" + excerpt(field) + "' " + what + ": the manifest is damaged; resume from an older checkpoint");
  }

 private:
  std::string file_;
};

// What a slice record says must lie within its tensor's shape.
void check_slice(const ManifestCheck& c, const nlohmann::json& r, const std::string& at) {
  c.get(r, "name", &nlohmann::json::is_string, "a string", at);
  const auto shape = c.sizes(r, "shape", at), local = c.sizes(r, "local", at);
  const int64_t dim = c.count(r, "dim", at), offset = c.count(r, "offset", at);
  const int64_t start = c.count(r, "start", at), end = c.count(r, "end", at);
  if (local.size() != shape.size() || dim >= static_cast<int64_t>(shape.size()))
    c.bad(at + "local", "does not match the rank of 'shape' and 'dim'");
  int64_t elements = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (static_cast<int64_t>(d) == dim ? offset > shape[d] - local[d] : local[d] != shape[d])
      c.bad(at + "offset", "puts the slice outside its tensor's shape");
    if (__builtin_mul_overflow(elements, local[d], &elements))
      c.bad(at + "local", "has more elements than 64 bits count");
  }
  if (start > end || end > elements) c.bad(at + "end", "lies outside the slice");
}

// Every field the reader uses, with its type and range.
void check_manifest(const std::string& file, const nlohmann::json& m) {
  const ManifestCheck c(file);
  c.count(m, "step", "");
  const auto& data = c.get(m, "data", &nlohmann::json::is_object, "a mapping", "");
  c.count(data, "document", "data."), c.count(data, "offset", "data.");
  const auto& rng = c.get(m, "rng_cpu", &nlohmann::json::is_string, "a string", "").get<std::string>();
  if (rng.size() % 2 || rng.find_first_not_of("0123456789abcdef") != std::string::npos)
    c.bad("rng_cpu", "should be lower-case hex digits");
  const auto& files = c.get(m, "files", &nlohmann::json::is_object, "a mapping", "");
  for (const auto& [name, entry] : files.items()) {
    c.plain_name(name, "files." + name);
    c.count(entry, "bytes", "files." + name + ".");
    c.get(entry, "checksum", &nlohmann::json::is_string, "a string", "files." + name + ".");
  }
  for (const char* section : {"model", "optimizer"}) {
    const auto& part = c.get(m, section, &nlohmann::json::is_object, "a mapping", "");
    if (std::string(section) == "optimizer") c.count(part, "steps", "optimizer.");
    const auto& shards = c.get(part, "shards", &nlohmann::json::is_object, "a mapping", std::string(section) + ".");
    for (const auto& [name, records] : shards.items()) {
      const std::string at = std::string(section) + ".shards." + name;
      if (!files.contains(name)) c.bad(at, "names a file that 'files' does not list");
      if (!records.is_array()) c.bad(at, "should be a list of slices");
      for (size_t i = 0; i < records.size(); ++i) check_slice(c, records[i], at + "[" + std::to_string(i) + "].");
    }
  }
  if (m.contains("lineage")) {
    const auto& runs = c.get(m, "lineage", &nlohmann::json::is_array, "a list", "");
    if (runs.empty()) c.bad("lineage", "is empty");
    for (size_t i = 0; i < runs.size(); ++i) {
      const std::string at = "lineage[" + std::to_string(i) + "].";
      c.get(runs[i], "run", &nlohmann::json::is_string, "a string", at);
      c.count(runs[i], "from_step", at);
    }
  }
  if (m.contains("data_fingerprint")) c.get(m, "data_fingerprint", &nlohmann::json::is_object, "a mapping", "");
  if (m.contains("checksum")) c.get(m, "checksum", &nlohmann::json::is_string, "a string", "");
}

// The manifest's checksum covers its text without the checksum field itself.
std::string manifest_text(const nlohmann::ordered_json& manifest) { return manifest.dump(2); }

// The fields format 4 added: a manifest that says it is older cannot hold
// them (an edited version number must not bypass the manifest checksum).
constexpr const char* kFormatFourFields[] = {"manifest_checksum", "lineage", "data_fingerprint", "checksum"};

nlohmann::json read_manifest(const std::string& path) {
  const std::string file = path + "/manifest.json";
  if (!fs::exists(file)) fail(file + ": missing; " + path + " is not a complete checkpoint");
  auto manifest = read_ordered_json_file(file);
  if (!manifest.is_object() || !manifest.contains("format") || manifest.at("format") != kFormat)
    fail(file + ": not a longtrain checkpoint manifest");
  const auto version = manifest.value("version", nlohmann::ordered_json());
  if (!version.is_number_integer() || version.get<int64_t>() < kOldestReadable || version.get<int64_t>() > kVersion)
    fail(file + ": checkpoint format version " + shown(version, 40) + ", this build reads " +
         std::to_string(kOldestReadable) + " to " + std::to_string(kVersion) +
         ": load it with the longtrain that wrote it");
  if (version.get<int64_t>() < 4) {
    for (const char* field : kFormatFourFields)
      if (manifest.contains(field))
        fail(file + ": says format " + std::to_string(version.get<int64_t>()) + " but has format 4's '" + field +
             "': it was edited; resume from an older checkpoint");
  } else {
    const auto recorded = manifest.value("manifest_checksum", nlohmann::ordered_json());
    manifest.erase("manifest_checksum");
    if (recorded != text_checksum(manifest_text(manifest)))
      fail(file +
           ": the manifest's checksum does not match its contents: it is damaged; resume from an older checkpoint");
  }
  nlohmann::json plain = manifest;
  check_manifest(file, plain);
  return plain;
}

std::string checksum_algorithm(const nlohmann::json& manifest) {
  return manifest.value("checksum", kLegacyChecksumAlgorithm);
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
  const std::string sum = file_checksum(file, checksum_algorithm(manifest));
  if (sum != entry.at("checksum").get<std::string>())
    fail(file + ": checksum " + sum + " does not match the manifest (" + entry.at("checksum").get<std::string>() +
         "): the file is corrupt; resume from an older checkpoint");
}

// A whole segment keeps its parameter's shape (readable by any tool); a
// slice is stored flat.
at::Tensor stored(const ParamSegment& seg, const at::Tensor& values) {
  return seg.start == 0 && seg.end == seg.numel() ? values.view(seg.shape) : values;
}

NamedTensors optimizer_tensors(const AdamW& optimizer, LlamaForCausalLMImpl& model, nlohmann::json& records) {
  NamedTensors out;
  for (const auto& s : optimizer.state()) {
    const auto& seg = s.segment;
    out.emplace_back(seg.name + ".exp_avg", stored(seg, s.exp_avg));
    out.emplace_back(seg.name + ".exp_avg_sq", stored(seg, s.exp_avg_sq));
    records.push_back(slice_record(seg.name, model.slice_of(seg.name), seg.shape, seg.start, seg.end));
  }
  return out;
}

// ZeRO-3: the weights as the optimizer's segments hold them (this rank's
// shard of the fp32 masters).
NamedTensors segment_weights(const AdamW& optimizer, LlamaForCausalLMImpl& model, nlohmann::json& records) {
  NamedTensors out;
  for (const auto& s : optimizer.state()) {
    const auto& seg = s.segment;
    out.emplace_back(seg.name, stored(seg, seg.values()));
    records.push_back(slice_record(seg.name, model.slice_of(seg.name), seg.shape, seg.start, seg.end));
  }
  return out;
}

// What one rank wrote, as JSON text for the gather to rank 0.
std::string write_part(const std::string& temp, LlamaForCausalLMImpl& model, const AdamW& optimizer,
                       const CheckpointStore::Part& part) {
  nlohmann::json record = {{"files", nlohmann::json::object()},
                           {"model", nlohmann::json::object()},
                           {"optimizer", nlohmann::json::object()}};
  auto write = [&](const std::string& section, const std::string& file, const NamedTensors& tensors,
                   const nlohmann::json& slices, const std::map<std::string, std::string>& metadata) {
    const auto written = save_safetensors(temp + "/" + file, tensors, metadata);
    record["files"][file] = {{"bytes", written.bytes}, {"checksum", written.checksum}};
    record[section][file] = slices;
  };
  if (!part.model_file.empty()) {
    nlohmann::json slices = nlohmann::json::array();
    auto tensors = part.weights_in_segments ? segment_weights(optimizer, model, slices) : model_tensors(model, slices);
    write("model", part.model_file, tensors, slices, {{"format", "pt"}});
  }
  if (!part.optimizer_file.empty()) {
    nlohmann::json slices = nlohmann::json::array();
    auto tensors = optimizer_tensors(optimizer, model, slices);
    write("optimizer", part.optimizer_file, tensors, slices, {});
  }
  return record.dump();
}

// Reads any part of a tensor from whichever files hold parts of it (of
// whatever tp, pp, dp or ZeRO layout wrote them), copying from each mapped
// file only the elements the two parts share: a rank touches the pages of
// what it holds, and never assembles a whole tensor.
class SliceReader {
 public:
  // `section`: "model" or "optimizer" in the manifest.
  SliceReader(std::string path, const nlohmann::json& manifest, const std::string& section)
      : path_(std::move(path)), manifest_(manifest) {
    for (const auto& [file, records] : manifest.at(section).at("shards").items())
      for (const auto& r : records) records_[r.at("name").get<std::string>()].emplace_back(file, &r);
  }

  // Elements [start, end) of the flattened slice `want` (local shape `local`)
  // of tensor `key` (in the files) of parameter `name`, into `out` (flat).
  void read(const std::string& name, const std::string& key, const TensorSlice& want, at::IntArrayRef local,
            int64_t start, int64_t end, at::Tensor out) {
    const auto shape = full_shape(want, local);
    const auto mine = runs({shape, want.dim, want.offset, local[want.dim], start, end});
    std::vector<std::pair<int64_t, int64_t>> filled;
    // Replicas of a part are read once, from a file open already if one is.
    auto candidates = records_[name];
    std::stable_partition(candidates.begin(), candidates.end(),
                          [&](const auto& c) { return opened_.count(c.first) > 0; });
    std::set<std::string> read_parts;
    for (const auto& [file, record] : candidates) {
      const auto& r = *record;
      if (const auto stored = r.at("shape").get<std::vector<int64_t>>(); stored != shape)
        fail(path_ + "/" + file + ": '" + name + "' has shape " + c10::str(at::IntArrayRef(stored)) + ", the model " +
             c10::str(at::IntArrayRef(shape)) + ": the recipe's model differs from the checkpoint's");
      const int64_t dim = r.at("dim").get<int64_t>(), first = r.at("start").get<int64_t>(),
                    last = r.at("end").get<int64_t>();
      const SlicePart part{shape, dim, r.at("offset").get<int64_t>(), r.at("local").at(dim).get<int64_t>(),
                           first, last};
      const auto pieces = overlaps(mine, runs(part));
      if (pieces.empty() || !read_parts.insert(part_key(part)).second) continue;
      const auto stored = stored_tensor(file, key, last - first).reshape(-1);
      for (const auto& o : pieces) {
        out.narrow(0, o.a, o.length).copy_(stored.narrow(0, o.b, o.length));
        filled.emplace_back(o.a, o.a + o.length);
      }
    }
    if (records_[name].empty()) fail(path_ + ": no tensor '" + key + "': the checkpoint is from another model");
    if (!covers(filled, end - start))
      fail(path_ + ": '" + key + "' is not complete in the checkpoint: a file is missing from its manifest");
  }

 private:
  static std::string part_key(const SlicePart& p) {
    return c10::str(p.dim, ':', p.offset, ':', p.length, ':', p.start, ':', p.end);
  }

  // Whether the ranges fill [0, n).
  static bool covers(std::vector<std::pair<int64_t, int64_t>> ranges, int64_t n) {
    std::sort(ranges.begin(), ranges.end());
    int64_t reached = 0;
    for (const auto& [lo, hi] : ranges) {
      if (lo > reached) return false;
      reached = std::max(reached, hi);
    }
    return reached >= n;
  }

  // Tensor `key` of `file`, which the manifest says holds `elements`.
  at::Tensor stored_tensor(const std::string& file, const std::string& key, int64_t elements) {
    const auto& stored_file = opened(file);
    if (!stored_file.contains(key)) fail(stored_file.path() + ": no tensor '" + key + "', which the manifest lists");
    auto values = stored_file.view(key);
    if (values.numel() != elements)
      fail(stored_file.path() + ": tensor '" + key + "' has " + std::to_string(values.numel()) +
           " elements, the manifest says " + std::to_string(elements) + ": the checkpoint is damaged");
    return values;
  }

  // A file mapped, not read: ranks of a node share its pages, and each
  // touches only the pages of what it reads.
  const SafetensorsFile& opened(const std::string& file) {
    auto it = opened_.find(file);
    if (it != opened_.end()) return *it->second;
    verify_file(path_, file, manifest_);
    return *(opened_[file] = std::make_unique<SafetensorsFile>(path_ + "/" + file));
  }

  std::string path_;
  const nlohmann::json& manifest_;
  // Parameter name -> (file, record) of every part of it.
  std::map<std::string, std::vector<std::pair<std::string, const nlohmann::json*>>> records_;
  std::map<std::string, std::unique_ptr<SafetensorsFile>> opened_;
};

}  // namespace

CheckpointStore::CheckpointStore(std::string dir, int64_t keep, int64_t interval)
    : dir_(std::move(dir)), keep_(keep), interval_(interval), lineage_(Lineage::fresh(new_run_id())) {}

CheckpointStore::Part CheckpointStore::part(int rank, bool whole_model, bool writes_weights, bool sharded_optimizer,
                                            bool sharded_weights) {
  auto numbered = [&](const char* stem) {
    char name[64];
    std::snprintf(name, sizeof(name), "%s.%05d.safetensors", stem, rank);
    return std::string(name);
  };
  Part part;
  part.weights_in_segments = sharded_weights;
  if (sharded_weights) part.model_file = numbered("model");
  else if (writes_weights) part.model_file = whole_model ? "model.safetensors" : numbered("model");
  if (sharded_optimizer) part.optimizer_file = numbered("optimizer");
  else if (writes_weights) part.optimizer_file = whole_model ? "optimizer.safetensors" : numbered("optimizer");
  return part;
}

std::optional<std::string> CheckpointStore::open(const std::string& resume, bool move_aside, Communicator& world) {
  std::string answer;
  if (world.rank() == 0) {
    try {
      const auto path = claim(resume, move_aside);
      answer = nlohmann::json{{"ok", path}, {"lineage", lineage_.to_json()}, {"moved", moved_aside_}}.dump();
    } catch (const Error& e) {
      // The message may quote a user's bytes: never let them stop it.
      answer = nlohmann::json{{"error", e.what()}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  const auto decided = nlohmann::json::parse(world.all_gather(answer).front());
  if (decided.contains("error")) throw AgreedError(decided.at("error").get<std::string>(), world.rank() == 0);
  lineage_ = Lineage::of_manifest(decided);
  moved_aside_ = decided.at("moved").get<std::string>();
  const auto path = decided.at("ok").get<std::string>();
  if (!path.empty()) newest_ = path;
  return newest_;
}

std::string CheckpointStore::claim(const std::string& resume, bool move_aside) {
  if (fs::is_directory(dir_))
    for (const auto& entry : fs::directory_iterator(dir_))
      if (entry.path().extension() == ".tmp") fs::remove_all(entry.path());  // an interrupted save
  std::string from;
  if (resume == "auto") from = latest().value_or("");
  else if (resume != "none") from = resolve_checkpoint(resume);
  if (!from.empty()) {
    const auto manifest = read_manifest(from);
    lineage_ = Lineage::of_manifest(manifest).resumed(lineage_.writer(), manifest.at("step").get<int64_t>());
  }
  // Checkpoints off this lineage would be pruned by it, or shadow it for
  // resume: auto, export and evaluation.
  std::vector<std::string> foreign;
  for (const auto& [step, path] : complete_checkpoints(dir_))
    if (!lineage_.holds(Lineage::of_manifest(read_manifest(path)), step)) foreign.push_back(path);
  if (foreign.empty()) return from;
  if (!move_aside) {
    std::string names;
    for (const auto& path : foreign) names += (names.empty() ? "" : ", ") + fs::path(path).filename().string();
    fail(dir_ + ": holds checkpoints of another run (" + names + ") that this run would prune or shadow: " +
         "continue them with checkpoint.resume: auto, use another run_dir (or checkpoint.dir), or set " +
         "checkpoint.move_aside: true to move them into " + dir_ + "/aside_" + lineage_.writer() +
         "/ (nothing is deleted)");
  }
  const std::string aside = dir_ + "/aside_" + lineage_.writer();
  fs::create_directories(aside);
  for (const auto& path : foreign) fs::rename(path, aside + "/" + fs::path(path).filename().string());
  sync_directory(dir_);
  moved_aside_ = "moved " + std::to_string(foreign.size()) + " checkpoints of another run into " + aside + "/";
  return from;
}

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
  const std::string fault = first_file.empty() ? "" : fault_at(world.rank(), state.step);
  if (fault == "hangsave") hang_forever();
  if (fault == "diskfull") {
    std::ofstream(temp + "/" + first_file) << "partial";  // what a full disk leaves behind
    fail(temp + "/" + first_file + ": write failed: " + std::strerror(ENOSPC) + " (is the disk full?) [LT_FAULT]");
  }
  const auto records = world.all_gather(write_part(temp, model, optimizer, part));
  if (world.rank() == 0) {
    nlohmann::ordered_json manifest = {
        {"format", kFormat},
        {"version", kVersion},
        {"step", state.step},
        {"lineage", lineage_.to_json()},
        {"data", {{"document", state.data.document}, {"offset", state.data.offset}}},
        {"data_fingerprint", state.data_fingerprint},
        {"rng_cpu", to_hex(state.rng)},
        {"checksum", kChecksumAlgorithm},
        {"model", {{"shards", nlohmann::json::object()}}},
        {"optimizer", {{"steps", optimizer.steps()}, {"shards", nlohmann::json::object()}}},
        {"files", nlohmann::json::object()}};
    for (const auto& text : records) {
      const auto record = nlohmann::json::parse(text);
      for (const auto& [name, entry] : record.at("files").items()) manifest["files"][name] = entry;
      for (const auto& section : {"model", "optimizer"})
        for (const auto& [name, slices] : record.at(section).items()) manifest[section]["shards"][name] = slices;
    }
    manifest["manifest_checksum"] = text_checksum(manifest_text(manifest));
    write_text_synced(temp + "/manifest.json", manifest_text(manifest));
    publish_directory(temp, final_path);  // the commit point
    prune();
  }
  world.barrier();
  newest_ = final_path;
  return final_path;
}

// Only this lineage's checkpoints (open() has moved or refused any other);
// one whose manifest no longer reads is not known to be ours, and stays.
void CheckpointStore::prune() const {
  auto mine = complete_checkpoints(dir_);
  auto ours = [&](const std::pair<int64_t, std::string>& c) {
    try {
      return lineage_.holds(Lineage::of_manifest(read_manifest(c.second)), c.first);
    } catch (const Error&) {
      return false;
    }
  };
  mine.erase(std::remove_if(mine.begin(), mine.end(), [&](const auto& c) { return !ours(c); }), mine.end());
  for (size_t i = 0; i + static_cast<size_t>(keep_) < mine.size(); ++i) fs::remove_all(mine[i].second);
}

std::optional<std::string> CheckpointStore::latest() const {
  const auto all = complete_checkpoints(dir_);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

std::string resolve_checkpoint(const std::string& path) {
  if (!fs::exists(path)) fail(path + ": checkpoint not found");
  if (fs::exists(path + "/manifest.json")) return path;
  auto latest = CheckpointStore(path, 1).latest();
  if (!latest) fail(path + ": contains no complete checkpoint (no step_*/manifest.json)");
  return *latest;
}

void load_checkpoint(const std::string& path, LlamaForCausalLMImpl& model, AdamW* optimizer, TrainState* state,
                     bool weights_in_segments) {
  LT_CHECK(optimizer || !weights_in_segments, "load_checkpoint: weights in segments need the optimizer's segments");
  const auto manifest = read_manifest(path);
  std::map<std::string, at::Tensor> params;  // by name: the order of the reads (and of their errors)
  for (const auto& item : model.named_parameters()) params[item.key()] = item.value();
  at::NoGradGuard no_grad;
  {
    SliceReader weights(path, manifest, "model");
    if (weights_in_segments) {
      for (const auto& s : optimizer->state()) {
        const auto& seg = s.segment;
        weights.read(seg.name, seg.name, model.slice_of(seg.name), seg.shape, seg.start, seg.end, seg.values());
      }
    } else {
      for (auto& [name, param] : params)
        weights.read(name, name, model.slice_of(name), param.sizes(), 0, param.numel(), param.view({-1}));
    }
  }
  if (optimizer) {
    // Each parameter's shape on this rank, as its segments know it (ZeRO-3's
    // parameters hold none).
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& s : optimizer->state()) shapes[s.segment.name] = s.segment.shape;
    SliceReader moments(path, manifest, "optimizer");
    auto read = [&](const std::string& name, const std::string& moment, int64_t start, int64_t end, at::Tensor into) {
      moments.read(name, name + "." + moment, model.slice_of(name), shapes.at(name), start, end, into);
    };
    optimizer->load_state(read, manifest.at("optimizer").at("steps").get<int64_t>());
  }
  if (state) {
    state->step = manifest.at("step").get<int64_t>();
    state->data_fingerprint = manifest.value("data_fingerprint", nlohmann::json::object());
    state->data = {manifest.at("data").at("document").get<int64_t>(), manifest.at("data").at("offset").get<int64_t>()};
    state->rng = from_hex(manifest.at("rng_cpu").get<std::string>());
    // The CPU generator's whole state, or restoring it would fail later.
    const auto state_bytes = at::detail::getDefaultCPUGenerator().get_state().numel();
    if (state->rng.numel() != state_bytes)
      ManifestCheck(path + "/manifest.json")
          .bad("rng_cpu", "should hold the " + std::to_string(state_bytes) +
                              " bytes of the CPU generator's state, holds " + std::to_string(state->rng.numel()));
  }
}

}  // namespace lt

#include "core/hf/hf_weights.h"

#include <filesystem>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>

#include "core/checkpoint/safetensors.h"
#include "core/hf/hf_names.h"
#include "core/config/hf_config.h"
#include "core/util/error.h"
#include "core/util/files.h"
#include "core/util/json_input.h"

namespace fs = std::filesystem;

namespace lt {
namespace {

constexpr const char* kSingle = "model.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";

// Which file holds each tensor, and the files, opened when first needed.
class HfFiles {
 public:
  // transformers' order: a single model.safetensors is read even beside
  // an index (a stale one, from an earlier sharded save).
  explicit HfFiles(std::string dir) : dir_(std::move(dir)) {
    if (fs::exists(dir_ + "/" + kSingle)) return;
    const std::string index = dir_ + "/" + kIndex;
    if (!fs::exists(index))
      fail(dir_ + ": neither " + kSingle + " nor " + kIndex + " (is this a Hugging Face model directory?)");
    index_ = index;
    const auto json = read_json_file(index);
    if (!json.is_object() || !json.contains("weight_map") || !json.at("weight_map").is_object())
      fail(index + ": malformed index: no weight_map mapping of tensor names to files");
    for (const auto& [name, file] : json.at("weight_map").items()) {
      if (!file.is_string() || !is_plain_file_name(file.get<std::string>()))
        fail(index + ": weight_map['" + excerpt(name) + "'] = " + shown(file) +
             " is not a plain file name beside the index");
      file_of_[name] = file.get<std::string>();
    }
  }

  // The file holding `name`, or null when the checkpoint lacks it.
  const SafetensorsFile* find(const std::string& name) {
    const std::string file = index_.empty() ? kSingle : file_of_.count(name) ? file_of_.at(name) : "";
    if (file.empty()) return nullptr;
    auto& open = files_[file];
    if (!open) {
      const std::string path = dir_ + "/" + file;
      if (!fs::exists(path)) fail(path + ": missing shard (" + index_ + " names it for '" + name + "')");
      open = std::make_unique<SafetensorsFile>(path);
    }
    return open->contains(name) ? open.get() : nullptr;
  }

  std::string where() const { return index_.empty() ? dir_ + "/" + kSingle : index_; }

  // Every tensor the checkpoint holds: the index's, or the single file's.
  std::vector<std::string> names() {
    std::vector<std::string> all;
    if (!index_.empty()) {
      for (const auto& [name, file] : file_of_) all.push_back(name);
      return all;
    }
    auto& single = files_[kSingle];
    if (!single) single = std::make_unique<SafetensorsFile>(dir_ + "/" + kSingle);
    return single->names();
  }

 private:
  std::string dir_, index_;
  std::map<std::string, std::string> file_of_;
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

at::ScalarType export_dtype(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  if (name == "float32") return at::kFloat;
  fail("export: --dtype " + name + " is not one of bfloat16, float16, float32");
}

void write_index(const std::string& path, const std::map<std::string, std::string>& file_of, int64_t bytes) {
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", bytes}};
  index["weight_map"] = file_of;
  write_text_synced(path, index.dump(2) + "\n");
}

// A tensor of the checkpoint, as F32, BF16 or F16 with the shape `shape`.
at::Tensor stored_tensor(HfFiles& files, const std::string& name, at::IntArrayRef shape) {
  const SafetensorsFile* file = files.find(name);
  if (!file) fail(files.where() + ": no tensor '" + name + "': the checkpoint does not match its config.json");
  const at::Tensor stored = file->view(name);
  const auto type = stored.scalar_type();
  if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf)
    fail(file->path() + ": tensor '" + name + "' is " + c10::toString(type) +
         ": weights must be F32, BF16 or F16 (quantised checkpoints are not supported)");
  if (stored.sizes() != shape)
    fail(file->path() + ": tensor '" + name + "' has shape " + c10::str(stored.sizes()) + ", the model " +
         c10::str(shape) + ": config.json and the weights disagree");
  return stored;
}

// Whether `name` is a tensor of the model that another rank (another
// pipeline stage) holds and so reads and judges.
bool held_elsewhere(const std::string& name, const LlamaForCausalLMImpl& model) {
  const ModelConfig& c = model.config();
  const ModelShard& s = model.shard();
  if (name == "model.embed_tokens.weight" || name == "model.norm.weight") return true;
  if (name == "lm_head.weight") return !c.tie_embeddings;
  const std::string layers = "model.layers.";
  if (name.rfind(layers, 0) != 0) return false;
  const auto dot = name.find('.', layers.size());
  const std::string index = name.substr(layers.size(), dot - layers.size());
  if (index.empty() || index.size() > 9 || index.find_first_not_of("0123456789") != std::string::npos) return false;
  const int64_t layer = std::stoll(index), last = s.num_layers < 0 ? c.num_layers : s.first_layer + s.num_layers;
  return layer < c.num_layers && (layer < s.first_layer || layer >= last);
}

// A tied model's checkpoint may repeat the embedding as lm_head.weight
// (transformers then reads the embedding alone): only an identical copy.
void check_tied_head(HfFiles& files, const std::string& where) {
  const auto* head = files.find("lm_head.weight");
  const auto* embedding = files.find("model.embed_tokens.weight");
  if (embedding && at::equal(head->view("lm_head.weight").to(at::kFloat),
                             embedding->view("model.embed_tokens.weight").to(at::kFloat)))
    return;
  fail(where +
       ": tensor 'lm_head.weight' differs from model.embed_tokens.weight while config.json ties them "
       "(tie_word_embeddings: true): untie them in config.json, or remove the tensor");
}

}  // namespace

void load_hf_weights(const std::string& dir, LlamaForCausalLMImpl& model) {
  HfFiles files(dir);
  const ModelConfig& config = model.config();
  at::NoGradGuard no_grad;
  std::set<std::string> read;  // every checkpoint tensor a parameter of the model is made of
  for (auto& item : model.named_parameters()) {
    auto& param = item.value();
    const TensorSlice slice = model.slice_of(item.key());
    for (const HfPiece& piece : hf_pieces(item.key(), config)) {
      read.insert(piece.name);
      if (piece.expert < 0) {
        auto full = param.sizes().vec();
        full[slice.dim] = slice.full;
        param.copy_(stored_tensor(files, piece.name, full).narrow(slice.dim, slice.offset, param.size(slice.dim)));
        continue;
      }
      const int64_t local = piece.expert - slice.offset;
      if (local < 0 || local >= param.size(0)) continue;  // another ep rank's expert
      auto target = param[local].narrow(0, piece.offset, piece.rows);
      target.copy_(stored_tensor(files, piece.name, target.sizes()));
    }
  }
  // Nothing of the checkpoint goes unused.
  for (const auto& name : files.names()) {
    if (read.count(name) || hf_buffer(name) || held_elsewhere(name, model)) continue;
    if (name == "lm_head.weight" && config.tie_embeddings) {
      check_tied_head(files, files.where());
      continue;
    }
    fail(files.where() + ": tensor '" + excerpt(name) + "' is not a parameter of the " + lt::name(config.family) +
         " model its config.json describes: longtrain would drop it (a feature it does not implement, or a "
         "checkpoint of another architecture)");
  }
}

const std::vector<std::string> kHfTokenizerFiles = {"tokenizer.json",
                                                    "tokenizer_config.json",
                                                    "tokenizer.model",
                                                    "special_tokens_map.json",
                                                    "added_tokens.json",
                                                    "vocab.json",
                                                    "merges.txt",
                                                    "generation_config.json",
                                                    "chat_template.jinja",
                                                    "chat_template.json",
                                                    "preprocessor_config.json"};

std::string describe_copied(const std::vector<std::string>& copied, const std::string& from) {
  if (copied.empty()) return "";
  std::string names;
  for (const auto& file : copied) names += (names.empty() ? "" : ", ") + file;
  return ", with " + names + " from " + from;
}

std::vector<std::string> export_hf(const ModelConfig& config, LlamaForCausalLMImpl& model, const std::string& out,
                                   const HfExportOptions& options, const std::string& tokenizer_from) {
  if (fs::exists(out) && !options.replace) fail(out + ": already exists: export into a new directory");
  const auto dtype = export_dtype(options.dtype);
  const auto hf_config = hf_config_json(config, options.dtype);  // refuses a model its family cannot hold
  const std::string temp = out + ".partial";
  fs::remove_all(temp);
  fs::create_directories(temp);
  // Whole tensors into shards of at most shard_gb, in the model's order.
  std::vector<NamedTensors> shards(1);
  int64_t shard_bytes = 0, total = 0;
  const auto limit = static_cast<int64_t>(options.shard_gb * 1e9);
  NamedTensorList params;
  for (const auto& item : model.named_parameters()) params.emplace_back(item.key(), item.value().detach());
  for (const auto& [name, tensor] : hf_tensors(params, config)) {
    auto t = tensor.to(at::kCPU, dtype).contiguous();
    const int64_t bytes = t.numel() * t.element_size();
    if (shard_bytes > 0 && shard_bytes + bytes > limit) shards.emplace_back(), shard_bytes = 0;
    shards.back().emplace_back(name, t);
    shard_bytes += bytes, total += bytes;
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (shards.size() == 1) {
    save_safetensors(temp + "/" + kSingle, shards[0], metadata);
  } else {
    std::map<std::string, std::string> file_of;
    char name[64];
    for (size_t i = 0; i < shards.size(); ++i) {
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      save_safetensors(temp + "/" + name, shards[i], metadata);
      for (const auto& [tensor, value] : shards[i]) file_of[tensor] = name;
    }
    write_index(temp + "/" + kIndex, file_of, total);
  }
  write_text_synced(temp + "/config.json", hf_config.dump(2) + "\n");
  std::vector<std::string> copied;
  for (const auto& file : kHfTokenizerFiles) {
    const fs::path from = fs::path(tokenizer_from) / file;
    if (tokenizer_from.empty() || !fs::is_regular_file(from)) continue;
    std::error_code error;
    fs::copy_file(from, fs::path(temp) / file, error);
    if (error) fail(from.string() + ": cannot copy it into the export (" + error.message() + ")");
    copied.push_back(file);
  }
  publish_directory(temp, out);  // the whole export appears at once, replacing an earlier one
  return copied;
}

}  // namespace lt

#include "core/hf/hf_weights.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/checkpoint/safetensors.h"
#include "core/config/hf_config.h"
#include "core/util/error.h"
#include "core/util/files.h"

namespace fs = std::filesystem;

namespace lt {
namespace {

constexpr const char* kSingle = "model.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";

// Which file holds each tensor, and the files, opened when first needed.
class HfFiles {
 public:
  explicit HfFiles(std::string dir) : dir_(std::move(dir)) {
    const std::string index = dir_ + "/" + kIndex;
    if (fs::exists(index)) {
      index_ = index;
      std::ifstream in(index);
      try {
        const auto json = nlohmann::json::parse(in);
        if (!json.is_object() || !json.contains("weight_map") || !json.at("weight_map").is_object())
          fail(index + ": malformed index: no weight_map mapping of tensor names to files");
        for (const auto& [name, file] : json.at("weight_map").items()) {
          if (!file.is_string() || !is_plain_file_name(file.get<std::string>()))
            fail(index + ": weight_map['" + printable(name) + "'] = " + printable(file.dump()) +
                 " is not a plain file name beside the index");
          file_of_[name] = file.get<std::string>();
        }
      } catch (const nlohmann::json::exception& e) {
        fail(index + ": malformed index: " + e.what());
      }
    } else if (!fs::exists(dir_ + "/" + kSingle)) {
      fail(dir_ + ": neither " + kSingle + " nor " + kIndex + " (is this a Hugging Face model directory?)");
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

}  // namespace

void load_hf_weights(const std::string& dir, LlamaForCausalLMImpl& model) {
  HfFiles files(dir);
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    auto& param = item.value();
    const SafetensorsFile* file = files.find(name);
    if (!file) fail(files.where() + ": no tensor '" + name + "': the checkpoint does not match its config.json");
    const at::Tensor stored = file->view(name);
    const auto type = stored.scalar_type();
    if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf)
      fail(file->path() + ": tensor '" + name + "' is " + c10::toString(type) +
           ": weights must be F32, BF16 or F16 (quantised checkpoints are not supported)");
    const TensorSlice slice = model.slice_of(name);
    auto full = param.sizes().vec();
    full[slice.dim] = slice.full;
    if (stored.sizes().vec() != full)
      fail(file->path() + ": tensor '" + name + "' has shape " + c10::str(stored.sizes()) + ", the model " +
           c10::str(at::IntArrayRef(full)) + ": config.json and the weights disagree");
    param.copy_(stored.narrow(slice.dim, slice.offset, param.size(slice.dim)));
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
  if (fs::exists(out)) fail(out + ": already exists: export into a new directory");
  const auto dtype = export_dtype(options.dtype);
  const std::string temp = out + ".partial";
  fs::remove_all(temp);
  fs::create_directories(temp);
  // Whole tensors into shards of at most shard_gb, in the model's order.
  std::vector<NamedTensors> shards(1);
  int64_t shard_bytes = 0, total = 0;
  const auto limit = static_cast<int64_t>(options.shard_gb * 1e9);
  for (const auto& item : model.named_parameters()) {
    auto t = item.value().detach().to(at::kCPU, dtype).contiguous();
    const int64_t bytes = t.numel() * t.element_size();
    if (shard_bytes > 0 && shard_bytes + bytes > limit) shards.emplace_back(), shard_bytes = 0;
    shards.back().emplace_back(item.key(), t);
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
  write_text_synced(temp + "/config.json", hf_config_json(config, options.dtype).dump(2) + "\n");
  std::vector<std::string> copied;
  for (const auto& file : kHfTokenizerFiles) {
    const fs::path from = fs::path(tokenizer_from) / file;
    if (tokenizer_from.empty() || !fs::is_regular_file(from)) continue;
    std::error_code error;
    fs::copy_file(from, fs::path(temp) / file, error);
    if (error) fail(from.string() + ": cannot copy it into the export (" + error.message() + ")");
    copied.push_back(file);
  }
  sync_directory(temp);
  fs::rename(temp, out);  // the whole export appears at once
  sync_directory(fs::absolute(out).parent_path().string());
  return copied;
}

}  // namespace lt

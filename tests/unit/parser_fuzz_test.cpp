// Every parser of files a user or a crash hands us, fed a fixed-seed stream
// of mutations of a valid input (LT_FUZZ_INPUTS each, 2,000 by default; the
// sanitizer stage of CI, scripts/sanitize.sh, feeds more):
// safetensors headers, checkpoint manifests, Megatron .idx files, HF
// config.json and index, recipe overrides. Each input either parses (and
// everything it describes is then read, so a sanitizer build sees any stray
// access) or is refused with one line of lt::Error. Any other exception
// fails; a crash ends the test. Mutations are structural (a JSON or YAML
// value replaced by a hostile one, a key removed; manifests signed again so
// edits reach the field checks) and raw (bits flipped, bytes set, cut,
// repeated). Inputs that once crashed live in tests/regressions/<parser>/
// and run first.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "train/checkpoint.h"
#include "core/checkpoint/safetensors.h"
#include "core/config/config.h"
#include "core/data/indexed_dataset.h"
#include "core/hf/hf_weights.h"
#include "core/optim/adamw.h"
#include "core/util/checksum.h"
#include "core/util/error.h"
#include "tests/support/megatron_writer.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

int64_t inputs_per_parser() {
  const char* text = std::getenv("LT_FUZZ_INPUTS");
  return text ? std::max<int64_t>(1, std::atoll(text)) : 2000;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : random_(seed) {}

  uint64_t below(uint64_t n) { return random_() % n; }

  // Bytes changed the ways damage and hostile writers change them.
  std::string raw(std::string bytes) {
    for (int edits = 1 + static_cast<int>(below(3)); edits > 0 && !bytes.empty(); --edits) {
      const size_t at = below(bytes.size());
      switch (below(6)) {
        case 0:
          bytes[at] = static_cast<char>(bytes[at] ^ (1 << below(8)));
          break;
        case 1:
          bytes[at] = "\x00\xff\x7f\x80\"-9[{}:,"[below(12)];
          break;
        case 2:
          bytes.resize(at);
          break;
        case 3:
          bytes.insert(at, bytes.substr(below(bytes.size()), below(64)));
          break;
        case 4:
          bytes.erase(at, below(16));
          break;
        default: {  // an 8-byte field (a length, an offset, a count) set to an edge
          const uint64_t edges[] = {0, 1, 0x7fffffffffffffffULL, 0x8000000000000000ULL, ~0ULL, ~0ULL - 7, 1ULL << 32};
          const uint64_t value = edges[below(7)];
          if (at + 8 <= bytes.size()) bytes.replace(at, 8, reinterpret_cast<const char*>(&value), 8);
        }
      }
    }
    return bytes;
  }

  // One value of a JSON document replaced by a hostile one, or removed.
  Json structural(Json doc) {
    std::vector<Json*> nodes;
    collect(doc, nodes);
    Json& node = *nodes[below(nodes.size())];
    static const std::vector<Json> hostile = {-1,
                                              0,
                                              1,
                                              -9223372036854775807LL - 1,
                                              9223372036854775807LL,
                                              18446744073709551615ULL,
                                              18446744073709551608ULL,
                                              1e308,
                                              -0.5,
                                              2.5,
                                              "",
                                              "../x",
                                              "/etc/passwd",
                                              "a/b",
                                              "zz",
                                              nullptr,
                                              true,
                                              Json::array(),
                                              Json::object(),
                                              Json::array({-1, 4}),
                                              Json::array({4294967296LL, 4294967296LL}),
                                              Json::array({0}),
                                              "F8",
                                              "BF16"};
    if (below(5) == 0 && (node.is_object() || node.is_array()) && !node.empty()) {
      if (node.is_object()) node.erase(node.begin());
      else node.erase(node.begin() + static_cast<std::ptrdiff_t>(below(node.size())));
    } else if (node.is_number_integer() && below(2) == 0) {
      node = node.get<int64_t>() + static_cast<int64_t>(below(5)) - 2;  // off by a little
    } else {
      node = hostile[below(hostile.size())];
    }
    return doc;
  }

 private:
  static void collect(Json& j, std::vector<Json*>& out) {
    out.push_back(&j);
    if (j.is_structured())
      for (auto& child : j) collect(child, out);
  }
  std::mt19937_64 random_;
};

// Runs `parse` on every regression input of `parser`, then on `count`
// mutations `next` makes; counts what parsed and what was refused.
void fuzz(const std::string& parser, int64_t count, const std::function<void(int64_t)>& next,
          const std::function<void()>& parse, const std::function<void(const std::string&)>& load_regression) {
  int64_t parsed = 0, refused = 0, regressions = 0;
  auto one = [&](const std::string& what) {
    try {
      parse();
      ++parsed;
    } catch (const Error& e) {
      const std::string message = e.what();
      if (message.empty() || message.find('\n') != std::string::npos)
        ADD_FAILURE() << parser << ": not one line for " << what << ":\n" << message;
      ++refused;
    } catch (const std::exception& e) {
      ADD_FAILURE() << parser << ": not an lt::Error for " << what << ": " << e.what();
    }
  };
  const fs::path kept = fs::path("tests/regressions") / parser;
  if (fs::is_directory(kept)) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(kept)) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) load_regression(file.string()), one(file.string()), ++regressions;
  }
  for (int64_t i = 0; i < count; ++i) next(i), one("mutation " + std::to_string(i));
  std::printf("fuzz %s: %lld regression inputs, %lld mutations: %lld parsed, %lld refused with one line\n",
              parser.c_str(), static_cast<long long>(regressions), static_cast<long long>(count),
              static_cast<long long>(parsed), static_cast<long long>(refused));
  EXPECT_GT(refused, 0);
}

// Safetensors bytes for this header and these data bytes.
std::string safetensors_bytes(const Json& header, const std::string& data) {
  const std::string text = header.dump();
  const uint64_t length = text.size();
  return std::string(reinterpret_cast<const char*>(&length), 8) + text + data;
}

TEST(ParserFuzz, SafetensorsHeaders) {
  const auto dir = testing::scratch_dir("fuzz", "safetensors");
  const std::string good = dir + "/good.safetensors";
  save_safetensors(good, {{"a", at::randn({2, 3})}, {"b", at::randn({4}).to(at::kBFloat16)}, {"c", at::arange(2)}},
                   {{"format", "pt"}});
  const std::string bytes = read_file(good);
  uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  const Json header = Json::parse(bytes.substr(8, length));
  const std::string data = bytes.substr(8 + length);
  const std::string input = dir + "/input.safetensors";
  Mutator mutate(0x5afe);
  fuzz(
      "safetensors", inputs_per_parser(),
      [&](int64_t) {
        write_file(input, mutate.below(3) ? safetensors_bytes(mutate.structural(header), data) : mutate.raw(bytes));
      },
      [&] {
        const SafetensorsFile file(input);
        for (const auto& name : file.names()) file.view(name).to(at::kDouble).sum().item<double>();  // every byte read
      },
      [&](const std::string& path) { fs::copy_file(path, input, fs::copy_options::overwrite_existing); });
}

TEST(ParserFuzz, MegatronIndex) {
  const auto dir = testing::scratch_dir("fuzz", "idx");
  testing::write_megatron_dataset(dir + "/good", {{{5, 6, 7}, {8}}, {{}}, {{9, 10}}, {{11, 12, 13, 14}}}, 8);
  const std::string idx = read_file(dir + "/good.idx");
  fs::copy_file(dir + "/good.bin", dir + "/input.bin");
  Mutator mutate(0x1d);
  fuzz(
      "idx", inputs_per_parser(), [&](int64_t) { write_file(dir + "/input.idx", mutate.raw(idx)); },
      [&] {
        const IndexedDataset dataset(dir + "/input");
        for (int64_t d = 0; d < dataset.num_documents(); ++d) dataset.document(d);
      },
      [&](const std::string& path) { fs::copy_file(path, dir + "/input.idx", fs::copy_options::overwrite_existing); });
}

ModelConfig micro_model() {
  ModelConfig m = testing::tiny_model();
  m.num_layers = 1, m.vocab_size = 32, m.hidden_size = 16, m.intermediate_size = 32, m.num_heads = 2,
  m.num_kv_heads = 1;
  return m;
}

TEST(ParserFuzz, CheckpointManifests) {
  testing::ensure_mpi();
  const auto dir = testing::scratch_dir("fuzz", "manifest");
  LlamaForCausalLM model(micro_model());
  std::vector<NamedParameter> params;
  for (auto& item : model->named_parameters()) params.push_back({item.key(), item.value()});
  AdamW optimizer(params, AdamWOptions{});
  Communicator self(MPI_COMM_SELF, "self", 60);
  CheckpointStore store(dir + "/store", 1);
  store.open("none", false, self);
  const std::string good = store.save(*model, optimizer, {3, {1, 2}, at::detail::getDefaultCPUGenerator().get_state()},
                                      self, {"model.safetensors", "optimizer.safetensors"});
  const std::string input = dir + "/input";
  fs::copy(good, input);
  const std::string manifest_text = read_file(good + "/manifest.json");
  const Json manifest = Json::parse(manifest_text);
  Mutator mutate(0xc4ec);
  fuzz(
      "manifest", inputs_per_parser(),
      [&](int64_t) {
        if (mutate.below(5) == 0) return write_file(input + "/manifest.json", mutate.raw(manifest_text));
        Json edited = mutate.structural(manifest);
        if (edited.is_object()) {  // signed again: the edit reaches the field checks
          edited.erase("manifest_checksum");
          edited["manifest_checksum"] = text_checksum(edited.dump(2));
        }
        write_file(input + "/manifest.json", edited.dump(2));
      },
      [&] {
        TrainState state;
        load_checkpoint(input, *model, &optimizer, &state);
      },
      [&](const std::string& path) {
        fs::copy_file(path, input + "/manifest.json", fs::copy_options::overwrite_existing);
      });
}

TEST(ParserFuzz, HfConfigAndIndex) {
  const auto dir = testing::scratch_dir("fuzz", "hf");
  const ModelConfig m = micro_model();
  LlamaForCausalLM model(m);
  export_hf(m, *model, dir + "/good", {"float32", 2e-6});  // several shards, so an index
  const std::string input = dir + "/input";
  fs::copy(dir + "/good", input);
  const Json config = Json::parse(read_file(input + "/config.json"));
  const Json index = Json::parse(read_file(input + "/model.safetensors.index.json"));
  write_file(dir + "/recipe.yaml", "init:\n  from_hf: " + input + "\ndata:\n  seq_len: 64\n");
  Mutator mutate(0x4f);
  bool index_turn = false;
  fuzz(
      "hf", inputs_per_parser(),
      [&](int64_t i) {
        index_turn = i % 2;  // config.json and the index in turn, the other one good
        const Json& doc = index_turn ? index : config;
        write_file(input + "/config.json", config.dump());
        write_file(input + "/model.safetensors.index.json", index.dump());
        const std::string bytes = mutate.below(4) ? mutate.structural(doc).dump() : mutate.raw(doc.dump());
        write_file(input + (index_turn ? "/model.safetensors.index.json" : "/config.json"), bytes);
      },
      [&] {
        if (!index_turn) {
          load_config(dir + "/recipe.yaml");
          return;
        }
        LlamaForCausalLM target(m);
        load_hf_weights(input, *target);
      },
      [&](const std::string& path) {
        index_turn = path.find("index") != std::string::npos;
        write_file(input + "/config.json", config.dump());
        write_file(input + "/model.safetensors.index.json", index.dump());
        fs::copy_file(path, input + (index_turn ? "/model.safetensors.index.json" : "/config.json"),
                      fs::copy_options::overwrite_existing);
      });
}

TEST(ParserFuzz, RecipeOverrides) {
  const std::vector<std::string> keys = {"parallel.dp",
                                         "parallel.tp",
                                         "parallel.sp.ulysses",
                                         "parallel.sp.ring",
                                         "parallel.pp",
                                         "parallel.timeout_s",
                                         "data.seq_len",
                                         "data.passkey.digits",
                                         "data.passkey.min_doc_len",
                                         "eval.passkey_lengths",
                                         "train.steps",
                                         "train.global_batch_tokens",
                                         "train.micro_batch_size",
                                         "memory.loss_tiles",
                                         "memory.mlp_tiles",
                                         "model.num_heads",
                                         "model.vocab_size",
                                         "checkpoint.keep",
                                         "data.curriculum",
                                         "train.lr",
                                         "profile.ranks",
                                         "model"};
  const std::vector<std::string> values = {"99999999999999999999",
                                           "9223372036854775807",
                                           "-9223372036854775808",
                                           "8E",
                                           "9999999999999999G",
                                           "1K",
                                           "0",
                                           "-1",
                                           "1e400",
                                           "nan",
                                           "inf",
                                           "''",
                                           "[]",
                                           "[1, -1]",
                                           "[99999999999999999999]",
                                           "{a: 1}",
                                           "~",
                                           "auto",
                                           "0x10",
                                           "65536",
                                           "1G",
                                           "[{until_step: 1, seq_len: 7}]",
                                           "'1; rm -rf /'",
                                           "\"\\x00\"",
                                           "[",
                                           "{",
                                           "&a *a",
                                           "!!binary AAAA"};
  std::string override_text;
  Mutator mutate(0x0e);
  fuzz(
      "overrides", inputs_per_parser(),
      [&](int64_t) {
        override_text = keys[mutate.below(keys.size())] + "=" + values[mutate.below(values.size())];
        if (mutate.below(4) == 0) override_text = mutate.raw(override_text);
      },
      [&] { load_config("recipes/tiny-passkey.yaml", {override_text}); },
      [&](const std::string& path) { override_text = read_file(path); });
}

}  // namespace
}  // namespace lt

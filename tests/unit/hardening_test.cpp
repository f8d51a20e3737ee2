// Hardening: a run owns the checkpoints of its lineage and never prunes,
// replaces or resumes another's; XXH3 covers every file and the manifest;
// damaged manifests, safetensors headers, recipes and data are each one line
// of lt::Error naming the file, key or tensor; empty documents and steps
// without labels neither hang nor move the optimizer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "train/checkpoint.h"
#include "train/lineage.h"
#include "core/checkpoint/safetensors.h"
#include "core/config/config.h"
#include "core/data/mixture_source.h"
#include "core/data/packer.h"
#include "train/trainer.h"
#include "core/util/checksum.h"
#include "core/util/error.h"
#include "core/util/mapped_file.h"
#include "core/util/logger.h"
#include "core/util/json_input.h"
#include "core/util/files.h"
#include "core/hf/hf_weights.h"
#include "tests/support/megatron_writer.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::expect_error;
using testing::write_text;

namespace fs = std::filesystem;
using nlohmann::json;

std::string hardening_dir(const std::string& name) { return testing::scratch_dir("hardening_test", name); }

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Config run_saving_every_3(const std::string& dir, int64_t steps) {
  Config c = testing::tiny_run(dir, steps);
  c.checkpoint.interval = 3;
  return c;
}

std::string step_dir(const std::string& run_dir, int step) {
  char name[32];
  std::snprintf(name, sizeof(name), "/step_%08d", step);
  return run_dir + "/checkpoints" + name;
}

json manifest_of(const std::string& step) { return json::parse(std::ifstream(step + "/manifest.json")); }

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Checksum, CatchesPairedSignFlipsTheOldOneMissed) {
  // Floats whose sign bits sit at bit 63 of two consecutive 8-byte words:
  // FNV-1a over words cancels the pair, XXH3 does not.
  const auto dir = hardening_dir("sign_flips");
  std::vector<float> values(64, 0.5f);
  write_text(dir + "/a", std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  values[1] = -values[1], values[3] = -values[3];
  write_text(dir + "/b", std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  EXPECT_EQ(file_checksum(dir + "/a", kLegacyChecksumAlgorithm), file_checksum(dir + "/b", kLegacyChecksumAlgorithm));
  EXPECT_NE(file_checksum(dir + "/a"), file_checksum(dir + "/b"));
  Checksum streamed;
  const std::string text = read_text(dir + "/a");
  for (size_t i = 0; i < text.size(); i += 7) streamed.update(text.data() + i, std::min<size_t>(7, text.size() - i));
  EXPECT_EQ(streamed.hex(), file_checksum(dir + "/a"));
  expect_error([&] { file_checksum(dir + "/a", "md4"); }, {dir + "/a", "'md4'"});
}

TEST(Lineage, HoldsItsAncestorsUpToWhereItLeftThem) {
  const Lineage a = Lineage::fresh("a"), b = a.resumed("b", 100);
  EXPECT_TRUE(b.holds(a, 100));
  EXPECT_FALSE(b.holds(a, 200));  // a's later steps are another branch
  EXPECT_TRUE(b.holds(b, 300));
  EXPECT_FALSE(a.holds(b, 300));
  EXPECT_FALSE(b.holds(Lineage::fresh("c"), 1));
}

TEST(CheckpointOwnership, AFreshRunRefusesAnotherRunsCheckpoints) {
  const auto dir = hardening_dir("fresh_refused");
  Trainer(run_saving_every_3(dir, 6)).run();
  const std::string before = read_text(step_dir(dir, 6) + "/manifest.json");
  // Fewer steps, resume none: its checkpoints would be pruned by the
  // older run's newer ones, and resume: auto would pick those.
  expect_error([&] { Trainer(run_saving_every_3(dir, 3)).run(); },
               {dir + "/checkpoints", "step_00000003, step_00000006", "checkpoint.resume: auto", "another run_dir",
                "checkpoint.move_aside: true", "nothing is deleted"});
  EXPECT_EQ(read_text(step_dir(dir, 6) + "/manifest.json"), before);
  EXPECT_EQ(entries(dir + "/checkpoints"), (std::vector<std::string>{"step_00000003", "step_00000006"}));
}

TEST(CheckpointOwnership, MoveAsideKeepsTheOldRunsCheckpoints) {
  const auto dir = hardening_dir("move_aside");
  Trainer(run_saving_every_3(dir, 6)).run();
  const std::string first_run = manifest_of(step_dir(dir, 6)).at("lineage").back().at("run");
  Config c = run_saving_every_3(dir, 3);
  c.checkpoint.move_aside = true;
  Trainer(c).run();
  const auto names = entries(dir + "/checkpoints");
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].rfind("aside_", 0), 0u);
  EXPECT_EQ(names[1], "step_00000003");
  EXPECT_EQ(entries(dir + "/checkpoints/" + names[0]), (std::vector<std::string>{"step_00000003", "step_00000006"}));
  EXPECT_EQ(manifest_of(dir + "/checkpoints/" + names[0] + "/step_00000006").at("lineage").back().at("run"), first_run);
  EXPECT_NE(manifest_of(step_dir(dir, 3)).at("lineage").back().at("run"), first_run);
}

TEST(CheckpointOwnership, ABranchDoesNotOwnTheStepsAfterIt) {
  const auto dir = hardening_dir("branch");
  Trainer(run_saving_every_3(dir, 6)).run();
  Config c = run_saving_every_3(dir, 6);
  c.checkpoint.resume = step_dir(dir, 3);  // step 6 is not this branch's
  expect_error([&] { Trainer(c).run(); }, {"step_00000006", "another run"});
}

TEST(CheckpointOwnership, ResumeExtendsTheLineageAndPrunesOnlyIt) {
  const auto dir = hardening_dir("lineage");
  Trainer(run_saving_every_3(dir, 3)).run();
  Config c = run_saving_every_3(dir, 9);
  c.checkpoint.resume = "auto";
  c.checkpoint.keep = 2;
  Trainer(c).run();
  EXPECT_EQ(entries(dir + "/checkpoints"), (std::vector<std::string>{"step_00000006", "step_00000009"}));
  const auto lineage = manifest_of(step_dir(dir, 9)).at("lineage");
  ASSERT_EQ(lineage.size(), 2u);
  EXPECT_EQ(lineage[0].at("from_step"), 0);
  EXPECT_EQ(lineage[1].at("from_step"), 3);
  EXPECT_EQ(manifest_of(step_dir(dir, 9)).at("checksum"), kChecksumAlgorithm);
}

// A store of one rank with a model and optimizer to save.
struct Saver {
  bool mpi = (testing::ensure_mpi(), true);  // before the communicator
  LlamaForCausalLM model{testing::tiny_model()};
  std::unique_ptr<AdamW> optimizer;
  Communicator self{MPI_COMM_SELF, "self", 60};
  Saver() {
    std::vector<NamedParameter> params;
    for (auto& item : model->named_parameters()) params.push_back({item.key(), item.value()});
    optimizer = std::make_unique<AdamW>(params, AdamWOptions{});
  }
  std::string save(CheckpointStore& store, int64_t step) {
    TrainState state{step, {0, 0}, at::zeros({4}, at::kByte)};
    return store.save(*model, *optimizer, state, self, {"model.safetensors", "optimizer.safetensors"});
  }
};

TEST(CheckpointOwnership, ReplacingAStepIsAtomic) {
  const auto dir = hardening_dir("replace");
  Saver saver;
  CheckpointStore store(dir, 2);
  store.open("none", false, saver.self);
  saver.save(store, 5);
  {
    at::NoGradGuard no_grad;
    saver.model->named_parameters()["model.norm.weight"].fill_(3.0);
  }
  const auto path = saver.save(store, 5);
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"step_00000005"}));
  LlamaForCausalLM loaded(testing::tiny_model());
  load_checkpoint(path, *loaded, nullptr, nullptr);
  EXPECT_EQ(loaded->named_parameters()["model.norm.weight"][0].item<float>(), 3.0f);
}

// A checkpoint whose manifest `edit` changed, signed again so that the
// edit reaches the field checks.
std::string edited(const std::string& good, const std::string& name,
                   const std::function<void(nlohmann::ordered_json&)>& edit) {
  const std::string out = fs::path(good).parent_path().string() + "/" + name;
  fs::remove_all(out);
  fs::copy(good, out);
  auto manifest = nlohmann::ordered_json::parse(std::ifstream(out + "/manifest.json"));
  edit(manifest);
  manifest.erase("manifest_checksum");
  manifest["manifest_checksum"] = text_checksum(manifest.dump(2));
  write_text(out + "/manifest.json", manifest.dump(2));
  return out;
}

void load_weights(const std::string& path) {
  LlamaForCausalLM model(testing::tiny_model());
  load_checkpoint(path, *model, nullptr, nullptr);
}

TEST(CheckpointManifest, DamageIsOneLineNamingTheField) {
  const auto dir = hardening_dir("manifest");
  Trainer(run_saving_every_3(dir, 3)).run();
  const auto good = step_dir(dir, 3);
  load_weights(good);

  {  // an edit without the manifest's checksum
    const std::string out = dir + "/unsigned";
    fs::copy(good, out);
    std::string text = read_text(out + "/manifest.json");
    text.replace(text.find("\"step\": 3"), 9, "\"step\": 4");
    write_text(out + "/manifest.json", text);
    expect_error([&] { load_weights(out); }, {out + "/manifest.json", "manifest's checksum does not match"});
  }
  const auto shard = [](nlohmann::ordered_json& m) -> nlohmann::ordered_json& {
    return m["model"]["shards"]["model.safetensors"][0];
  };
  const std::vector<std::tuple<std::string, std::function<void(nlohmann::ordered_json&)>, std::string>> cases = {
      {"escape",
       [](auto& m) {
         m["files"]["../model.safetensors"] = m["files"]["model.safetensors"];
         m["model"]["shards"]["../model.safetensors"] = m["model"]["shards"]["model.safetensors"];
       },
       "'files.../model.safetensors' is not a plain file name"},
      {"unlisted", [](auto& m) { m["files"].erase("model.safetensors"); },
       "'model.shards.model.safetensors' names a file"},
      {"offset", [&](auto& m) { shard(m)["offset"] = 1; }, "puts the slice outside its tensor's shape"},
      {"end", [&](auto& m) { shard(m)["end"] = 1 << 30; }, "'model.shards.model.safetensors[0].end' lies outside"},
      {"negative", [&](auto& m) { shard(m)["shape"][0] = -4; }, "should be a non-negative integer"},
      {"dim", [&](auto& m) { shard(m)["dim"] = 7; }, "does not match the rank"},
      {"step_type", [](auto& m) { m["step"] = "3"; }, "'step' should be an integer"},
      {"document", [](auto& m) { m["data"]["document"] = -1; }, "'data.document' should be a non-negative integer"},
      {"rng", [](auto& m) { m["rng_cpu"] = "zz"; }, "'rng_cpu' should be lower-case hex digits"},
      // An older format number must not skip the checks of the current one.
      {"version", [](auto& m) { m["version"] = 3; }, "says format 3 but has format 4's"},
      {"lineage", [](auto& m) { m["lineage"][0].erase("from_step"); }, "'lineage[0].from_step' is missing"},
      {"checksum", [](auto& m) { m["checksum"] = "crc1"; }, "checksum algorithm 'crc1' is unknown"},
  };
  for (const auto& [name, edit, fragment] : cases) {
    SCOPED_TRACE(name);
    const auto path = edited(good, name, edit);
    expect_error([&] { load_weights(path); }, {path, fragment});
  }
  // A generator state of the wrong size, met when a run resumes from it.
  const auto rng = edited(good, "rng_length", [](auto& m) { m["rng_cpu"] = "00"; });
  LlamaForCausalLM model(testing::tiny_model());
  TrainState state;
  expect_error([&] { load_checkpoint(rng, *model, nullptr, &state); },
               {rng + "/manifest.json", "'rng_cpu' should hold the", "bytes of the CPU generator's state, holds 1"});
  // A file the manifest lists with a tensor of another size.
  const auto shrunk = edited(good, "shrunk", [&](auto& m) {
    auto& r = shard(m);
    r["end"] = r["end"].template get<int64_t>() - 1;
  });
  expect_error([&] { load_weights(shrunk); }, {shrunk + "/model.safetensors", "elements, the manifest says"});
}

// Checkpoints of format 3 (FNV checksums, no lineage, no manifest checksum)
// still load.
TEST(CheckpointManifest, FormatThreeStaysReadable) {
  const auto dir = hardening_dir("format3");
  Trainer(run_saving_every_3(dir, 3)).run();
  const auto good = step_dir(dir, 3);
  const auto old = edited(good, "old", [&](auto& m) {
    m["version"] = 3;
    for (const char* key : {"lineage", "data_fingerprint", "checksum"}) m.erase(key);
    for (auto& [name, entry] : m["files"].items())
      entry["checksum"] = file_checksum(good + "/" + name, kLegacyChecksumAlgorithm);
  });
  auto manifest = nlohmann::ordered_json::parse(std::ifstream(old + "/manifest.json"));
  manifest.erase("manifest_checksum");
  write_text(old + "/manifest.json", manifest.dump(2));
  LlamaForCausalLM a(testing::tiny_model()), b(testing::tiny_model());
  load_checkpoint(good, *a, nullptr, nullptr);
  load_checkpoint(old, *b, nullptr, nullptr);
  for (const auto& item : a->named_parameters()) EXPECT_TRUE(item.value().equal(b->named_parameters()[item.key()]));
  // Its run resumes from it and owns it.
  Config c = run_saving_every_3(dir + "/resumed", 6);
  c.checkpoint.resume = old;
  Trainer(c).run();
  EXPECT_EQ(manifest_of(step_dir(dir + "/resumed", 6)).at("lineage")[0].at("run"), "unrecorded");
}

TEST(CheckpointManifest, ChangedDataSettingsAreRefusedByName) {
  const auto dir = hardening_dir("fingerprint");
  Trainer(run_saving_every_3(dir, 3)).run();
  Config c = run_saving_every_3(dir, 6);
  c.checkpoint.resume = "auto";
  c.data.passkey.digits = 4;
  expect_error([&] { Trainer(c).run(); },
               {step_dir(dir, 3), "data.passkey.digits: 3 then, 4 now", "restore those settings"});
  c.data.passkey.digits = 3;
  c.data.seq_len = 32;  // how the stream is packed, not what it is: resumes
  c.train.global_batch_tokens = 4 * 32;
  Trainer(c).run();
}

// A safetensors file with this header over `data_bytes` zero bytes.
std::string safetensors_with(const std::string& path, const std::string& header, size_t data_bytes) {
  const uint64_t length = header.size();
  std::string bytes(reinterpret_cast<const char*>(&length), 8);
  write_text(path, bytes + header + std::string(data_bytes, '\0'));
  return path;
}

TEST(SafetensorsHeader, EveryBadEntryNamesTheFileAndTensor) {
  const auto dir = hardening_dir("safetensors");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [18446744073709551608, 8]}})", "lie outside"},
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 18446744073709551612]}})", "lie outside"},
      {R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", "not a non-negative integer"},
      {R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", "not a non-negative integer"},
      {R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", "too large"},
      {R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", "shape and dtype make 12"},
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-1, 8]}})", "not two non-negative integers"},
      {R"({"w": {"dtype": 5, "shape": [2], "data_offsets": [0, 8]}})", "dtype is not a string"},
      {R"({"w": {"dtype": "F8", "shape": [2], "data_offsets": [0, 8]}})", "unsupported dtype 'F8'"},
      {R"({"w": [1, 2]})", "malformed entry"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto path = safetensors_with(dir + "/" + std::to_string(i) + ".safetensors", cases[i].first, 8);
    expect_error([&] { SafetensorsFile file(path); }, {path, "tensor 'w'", cases[i].second});
  }
  const auto list = safetensors_with(dir + "/list.safetensors", "[1, 2]", 0);
  expect_error([&] { SafetensorsFile file(list); }, {list, "not a JSON object"});
  const auto good = safetensors_with(dir + "/good.safetensors",
                                     R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 8);
  EXPECT_EQ(SafetensorsFile(good).view("w").numel(), 2);
}

TEST(RecipeValues, OverflowsAndImpossibleSettingsAreOneLine) {
  const std::string recipe = "recipes/tiny-passkey.yaml";
  expect_error([&] { load_config(recipe, {"parallel.dp=99999999999999999999"}); },
               {"parallel.dp", "'auto' or an integer"});
  expect_error([&] { load_config(recipe, {"data.seq_len=99999999999999999G"}); },
               {"data.seq_len", "expected an integer"});
  expect_error(
      [&] {
        load_config(recipe,
                    {"parallel.tp=65536", "parallel.pp=65536", "parallel.sp.ulysses=65536", "parallel.sp.ring=65536"});
      },
      {"parallel: dp x tp x ulysses x ring x pp", "lower the degrees"});
  expect_error(
      [&] {
        load_config(recipe, {"eval.passkey_lengths=[64]", "data.passkey.digits=32", "model.vocab_size=512",
                             "data.passkey.min_doc_len=160", "data.passkey.max_doc_len=512"});
      },
      {"eval.passkey_lengths[0]=64", "cannot hold a passkey of 32 digits"});
}

// Document i: empty when i is odd, else i + 1 tokens.
class GappySource : public DocumentSource {
 public:
  std::vector<int64_t> document(int64_t i, int64_t) const override {
    if (i % 2) return {};
    std::vector<int64_t> d(i + 1);
    for (int64_t j = 0; j <= i; ++j) d[j] = 100 * i + j;
    return d;
  }
};

class EmptySource : public DocumentSource {
 public:
  std::vector<int64_t> document(int64_t, int64_t) const override { return {}; }
};

TEST(EmptyDocuments, AreSkippedInEveryPacking) {
  GappySource source;
  for (const std::string packing : {"split", "whole"}) {
    DataConfig config;
    config.packing = parse_choice<Packing>(packing);
    Packer packer(source, config, {1, 0});
    auto b = packer.next(1, 8);
    // Document 1 is empty: documents 2 and 4 fill the sequence.
    EXPECT_TRUE(b.tokens[0].equal(at::tensor({200L, 201L, 202L, 400L, 401L, 402L, 403L, 404L}))) << packing;
  }
  DataConfig config;
  config.packing = Packing::adaptive;
  Packer packer(source, config, {1, 0});
  const auto documents = packer.documents(20, 8);  // before: an endless loop on the empty document
  int64_t tokens = 0;
  for (const auto& d : documents) {
    EXPECT_GT(d.tokens.size(1), 0);
    tokens += d.tokens.size(1);
  }
  EXPECT_EQ(tokens, 20);
  EmptySource nothing;
  Packer hopeless(nothing, config, {});
  expect_error([&] { hopeless.next(1, 8); }, {"empty: the data holds no tokens"});
}

TEST(EmptyDocuments, MegatronDataOfNoTokensIsRefusedAtStart) {
  const auto dir = hardening_dir("empty_megatron");
  testing::write_megatron_dataset(dir + "/none", {{{}}, {{}}, {{}}}, 8);
  DataConfig data;
  data.source = DataSourceKind::indexed;
  data.path = dir + "/none";
  data.eval_fraction = 0;
  expect_error([&] { MixtureSource source(data, 1000, 1, Split::Train); }, {dir + "/none", "hold no tokens"});
  testing::write_megatron_dataset(dir + "/some", {{{}}, {{5, 6, 7}}, {{}}, {{8, 9}}}, 8);
  data.path = dir + "/some";
  MixtureSource source(data, 1000, 1, Split::Train);
  for (int64_t i = 0; i < 16; ++i) EXPECT_FALSE(source.document(i, 64).empty()) << i;
}

TEST(DataPosition, PastItsDocumentIsRefused) {
  GappySource source;
  DataConfig config;
  Packer packer(source, config, {2, 50});  // document 2 has 3 tokens
  expect_error([&] { packer.next(1, 8); }, {"offset 50 lies past the end of document 2 (3 tokens)"});
}

TEST(UnlabelledStep, IsSkippedWithoutMovingTheOptimizer) {
  Config c = testing::tiny_run(hardening_dir("unlabelled"), 2);
  Trainer trainer(c);
  Batch batch = testing::first_batch(c, 3);
  batch.labels.fill_(kIgnoreIndex);
  std::map<std::string, at::Tensor> before;
  for (const auto& item : trainer.model().named_parameters()) before[item.key()] = item.value().detach().clone();
  const auto result = trainer.step(batch, 1, 1e-2);
  EXPECT_TRUE(std::isnan(result.loss));
  EXPECT_EQ(result.grad_norm, 0);
  for (const auto& item : trainer.model().named_parameters())
    EXPECT_TRUE(item.value().equal(before[item.key()])) << item.key();  // no decay, no moment update
}

// Second round: input longtrain did not write (JSON nested without end,
// overlapping tensors, repeated recipe keys, numbers past double, names
// that are not UTF-8, a data file cut while mapped) and writes that fail;
// HF folders read in transformers' order; a run's own config.yaml reads
// back; an export replaced only when whole.

// A JSON value nested `depth` lists deep.
std::string deep(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }
constexpr size_t kDeep = 300000;  // deep enough to exhaust a thread's stack by recursion

std::string safetensors_bytes(const std::string& header, size_t data_bytes) {
  const uint64_t length = header.size();
  return std::string(reinterpret_cast<const char*>(&length), 8) + header + std::string(data_bytes, '\0');
}

std::string exported_model(const std::string& dir, double shard_gb) {
  LlamaForCausalLM model(testing::tiny_model());
  HfExportOptions options;
  options.dtype = "float32";
  options.shard_gb = shard_gb;
  export_hf(testing::tiny_model(), *model, dir, options, "");
  return dir;
}

TEST(UntrustedJson, DeepNestingIsOneLineInEveryParser) {
  const auto dir = hardening_dir("deep");
  // config.json.
  const auto hf = exported_model(dir + "/hf", 5);
  write_text(dir + "/recipe.yaml", "init:\n  from_hf: " + hf + "\n");
  auto config = read_json_file(hf + "/config.json");
  config["vocab_size"] = "DEEP";
  std::string text = config.dump();
  text.replace(text.find("\"DEEP\""), 6, deep(kDeep));
  write_text(hf + "/config.json", text);
  expect_error([&] { load_config(dir + "/recipe.yaml"); }, {hf + "/config.json", "nested more than 64 levels"});
  // A safetensors header's shape.
  const std::string file = dir + "/deep.safetensors";
  write_text(file, safetensors_bytes(
                       R"({"a": {"dtype": "F32", "shape": )" + deep(kDeep) + R"(, "data_offsets": [0, 4]}})", 4));
  expect_error([&] { SafetensorsFile{file}; }, {file, "safetensors header", "nested more than 64"});
  // An index's weight_map.
  const auto sharded = exported_model(dir + "/sharded", 1e-6);
  write_text(sharded + "/model.safetensors.index.json", R"({"weight_map": {"lm_head.weight": )" + deep(kDeep) + "}}");
  LlamaForCausalLM model(testing::tiny_model());
  expect_error([&] { load_hf_weights(sharded, *model); }, {"model.safetensors.index.json", "nested more than 64"});
  // A recipe, and a value on the command line (yaml-cpp bounds its own depth).
  write_text(dir + "/deep.yaml", "train:\n  lr: " + deep(kDeep) + "\n");
  expect_error([&] { load_config(dir + "/deep.yaml"); },
               {dir + "/deep.yaml:2:", "invalid YAML: nested", "levels deep"});
  expect_error([&] { load_config(dir + "/recipe.yaml", {"train.lr=" + deep(kDeep)}); },
               {"train.lr", "invalid YAML value: nested"});
}

TEST(UntrustedJson, QuotedValuesAreCappedAndNeverThrowOnBytes) {
  EXPECT_LE(shown(json(std::string(100000, 'x'))).size(), 210u);
  EXPECT_NO_THROW(shown(json(std::string("\xff\xfe"))));
}

TEST(SafetensorsHeader, OverlappingTensorsAreRefused) {
  const auto dir = hardening_dir("overlap");
  const std::string file = dir + "/overlap.safetensors";
  write_text(file, safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                                     R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                                     12));
  expect_error([&] { SafetensorsFile{file}; }, {file, "tensors 'a' and 'b' overlap in data_offsets"});
}

TEST(HfImport, ASingleFileWinsOverAStaleIndexAsInTransformers) {
  const auto dir = hardening_dir("precedence");
  const auto hf = exported_model(dir + "/hf", 5);
  // An index left from an earlier sharded save, naming shards long gone.
  write_text(hf + "/model.safetensors.index.json",
             R"({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}})");
  LlamaForCausalLM loaded(testing::tiny_model());
  load_hf_weights(hf, *loaded);
  SafetensorsFile single(hf + "/model.safetensors");
  EXPECT_TRUE(single.view("model.embed_tokens.weight").equal(loaded->named_parameters()["model.embed_tokens.weight"]));
}

TEST(HfImport, SizesBeyondAnyModelAreOneLine) {
  const auto dir = hardening_dir("huge");
  const auto hf = exported_model(dir + "/hf", 5);
  write_text(dir + "/recipe.yaml", "init:\n  from_hf: " + hf + "\n");
  const auto config = read_json_file(hf + "/config.json");
  for (const auto& [key, value] : {std::pair{"vocab_size", int64_t{1} << 40},
                                   {"hidden_size", int64_t{1} << 40},
                                   {"intermediate_size", int64_t{1} << 40},
                                   {"num_hidden_layers", int64_t{1} << 40}}) {
    auto edited = config;
    edited[key] = value;
    write_text(hf + "/config.json", edited.dump());
    expect_error([&] { load_config(dir + "/recipe.yaml"); }, {hf + "/config.json", "1099511627776", "must be in [1, "});
  }
}

TEST(RecipeText, RepeatedKeysAreRefusedWithBothLines) {
  const auto dir = hardening_dir("repeated");
  write_text(dir + "/sections.yaml", "train:\n  steps: 3\nmodel:\n  preset: tiny\ntrain:\n  steps: banana\n");
  expect_error([&] { load_config(dir + "/sections.yaml"); },
               {dir + "/sections.yaml:5:1", "key 'train' appears twice (first at line 1, again at line 5)"});
  write_text(dir + "/keys.yaml", "model:\n  preset: tiny\ntrain:\n  steps: 3\n  lr: 1e-3\n  steps: 4\n");
  expect_error([&] { load_config(dir + "/keys.yaml"); }, {dir + "/keys.yaml:6:3", "key 'steps' appears twice"});
  write_text(dir + "/ok.yaml", "model:\n  preset: tiny\n");
  expect_error([&] { load_config(dir + "/ok.yaml", {"train={steps: 3, steps: 4}"}); },
               {"command line", "key 'steps' appears twice"});
}

TEST(RecipeValues, NonFiniteNumbersAreRefused) {
  const auto dir = hardening_dir("finite");
  write_text(dir + "/ok.yaml", "model:\n  preset: tiny\n");
  for (std::string text : {"1e400", "-1e400", "inf", "nan", "NAN", "infinity"})
    expect_error([&] { load_config(dir + "/ok.yaml", {"model.rope_theta=" + text}); },
                 {"model.rope_theta: expected a finite number, got '" + text + "'"});
  expect_error([&] { load_config(dir + "/ok.yaml", {"train.lr=.nan"}); }, {"train.lr: expected a finite number"});
}

// Whatever a recipe may say, the run's resolved config.yaml loads back as
// the same recipe (longtrain export and resume read it).
TEST(RecipeValues, ARunsOwnConfigAlwaysReadsBack) {
  const auto dir = hardening_dir("round_trip");
  write_text(dir + "/odd.yaml",
             "model:\n  preset: tiny\nrun_dir: \"" + dir + "/a run: with # and 'quotes' \\\"and\\\" ünïcödé\"\n");
  const std::vector<std::string> odd = {
      "train.lr=1e-300",
      "train.min_lr=0",
      "model.rope_theta=1.7976931348623157e308",
      "model.rms_norm_eps=1e-12",
      "checkpoint.resume=yes",
      "data.curriculum=[{until_step: 2, seq_len: 64}]",
      "eval.passkey_lengths=[128, 256]",
  };
  const Config first = load_config(dir + "/odd.yaml", odd);
  write_text(dir + "/config.yaml", to_yaml(first) + "\n");
  const Config again = load_config(dir + "/config.yaml");
  EXPECT_EQ(to_yaml(again), to_yaml(first));
  EXPECT_EQ(again.run_dir, dir + "/a run: with # and 'quotes' \"and\" ünïcödé");
  EXPECT_EQ(again.checkpoint.resume, "yes");
  EXPECT_EQ(again.train.lr, 1e-300);
}

TEST(Paths, NotUtf8IsRefusedUpFrontNamingTheKey) {
  const auto dir = hardening_dir("bytes");
  write_text(dir + "/ok.yaml", "model:\n  preset: tiny\n");
  for (std::string key : {"run_dir", "checkpoint.dir", "checkpoint.resume", "data.path"})
    expect_error([&] { load_config(dir + "/ok.yaml", {key + "=" + dir + "/bad\xff\xfe"}); },
                 {key, "is not valid UTF-8"});
  EXPECT_TRUE(is_utf8("plain/ünïcödé/日本語/🙂"));
  for (std::string bad : {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\x80"})
    EXPECT_FALSE(is_utf8("a" + bad + "b")) << printable(bad);
  expect_error([&] { require_utf8("x\xff", "eval: argument"); }, {"eval: argument 'x\\xff' is not valid UTF-8"});
}

// A write that fails (here: a full disk, /dev/full) ends the run naming the file.
TEST(Writes, ALostLogLineOrRecordIsOneLineNamingTheFile) {
  for (std::string file : {"train.log", "metrics.jsonl"}) {
    const auto dir = hardening_dir("full_" + file);
    fs::create_symlink("/dev/full", dir + "/" + file);
    Logger logger(dir, /*append=*/true, /*tensorboard=*/false);
    expect_error(
        [&] {
          logger.line("step 1");
          logger.metrics({{"step", 1}, {"loss", 2.5}});
        },
        {dir + "/" + file, "write failed", "No space left on device"});
  }
  const auto dir = hardening_dir("full_files");
  fs::create_symlink("/dev/full", dir + "/config.yaml");
  expect_error([&] { write_text_synced(dir + "/config.yaml", "model: {}\n"); }, {dir + "/config.yaml", "write failed"});
  fs::create_symlink("/dev/full", dir + "/eval.jsonl");
  expect_error([&] { append_line(dir + "/eval.jsonl", "{}"); }, {dir + "/eval.jsonl", "cannot append"});
}

TEST(Export, AnEarlierExportIsReplacedOnlyWhenTheNewOneIsWhole) {
  const auto dir = hardening_dir("export_replace");
  const auto out = exported_model(dir + "/hf", 5);
  const auto before = SafetensorsFile(out + "/model.safetensors").view("model.norm.weight").clone();
  LlamaForCausalLM other(testing::tiny_model());
  {
    at::NoGradGuard no_grad;
    other->named_parameters()["model.norm.weight"].fill_(3);
  }
  HfExportOptions options;
  options.replace = true;
  options.dtype = "float32";
  // A tokenizer file no one may read (a write-only sysfs attribute: root
  // too is refused) fails the export after its weights are written.
  const std::string unreadable = "/sys/bus/pci/rescan";
  if (fs::exists(unreadable)) {
    fs::create_directories(dir + "/tokenizer");
    fs::create_symlink(unreadable, dir + "/tokenizer/tokenizer.json");
    expect_error([&] { export_hf(testing::tiny_model(), *other, out, options, dir + "/tokenizer"); },
                 {"tokenizer.json", "cannot copy it into the export"});
    EXPECT_TRUE(SafetensorsFile(out + "/model.safetensors").view("model.norm.weight").equal(before));
  }
  export_hf(testing::tiny_model(), *other, out, options, "");
  EXPECT_TRUE(SafetensorsFile(out + "/model.safetensors").view("model.norm.weight").eq(3).all().item<bool>());
  EXPECT_FALSE(fs::exists(out + ".partial"));
}

// A mapped file cut while in use ends the process with one line naming it,
// instead of SIGBUS.
TEST(MappedFileDeathTest, TruncatedWhileMappedIsOneLineNamingTheFile) {
  const auto dir = hardening_dir("sigbus");
  const std::string path = dir + "/tokens.bin";
  write_text(path, std::string(1 << 16, 'x'));
  EXPECT_EXIT(
      {
        MappedFile file(path);
        ::truncate(path.c_str(), 0);
        volatile uint8_t byte = file.data()[1 << 15];
        (void)byte;
      },
      ::testing::ExitedWithCode(2), "tokens.bin: changed or truncated while training");
}

}  // namespace
}  // namespace lt

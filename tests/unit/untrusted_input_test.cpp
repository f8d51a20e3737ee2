// Hardening, second round: input longtrain did not write (JSON nested
// without end, overlapping tensors, repeated recipe keys, numbers past
// double, names that are not UTF-8, a data file cut while mapped) and
// writes that fail are each one line of lt::Error naming the file, key or
// tensor; HF folders are read in transformers' order; a run's own
// config.yaml always reads back; an export is replaced only when whole.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/checkpoint/safetensors.h"
#include "core/config/config.h"
#include "core/hf/hf_weights.h"
#include "core/util/error.h"
#include "core/util/files.h"
#include "core/util/json_input.h"
#include "core/util/logger.h"
#include "core/util/mapped_file.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string temp_dir(const std::string& name) { return testing::scratch_dir("untrusted_input_test", name); }

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

template <class F>
void expect_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one with '" << fragments.front() << "'";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& fragment : fragments) EXPECT_NE(message.find(fragment), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_LT(message.size(), 1000u) << "a message quoting a whole hostile value";
  }
}

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
  const auto dir = temp_dir("deep");
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
  const auto dir = temp_dir("overlap");
  const std::string file = dir + "/overlap.safetensors";
  write_text(file, safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                                     R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                                     12));
  expect_error([&] { SafetensorsFile{file}; }, {file, "tensors 'a' and 'b' overlap in data_offsets"});
}

TEST(HfImport, ASingleFileWinsOverAStaleIndexAsInTransformers) {
  const auto dir = temp_dir("precedence");
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
  const auto dir = temp_dir("huge");
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
  const auto dir = temp_dir("repeated");
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
  const auto dir = temp_dir("finite");
  write_text(dir + "/ok.yaml", "model:\n  preset: tiny\n");
  for (std::string text : {"1e400", "-1e400", "inf", "nan", "NAN", "infinity"})
    expect_error([&] { load_config(dir + "/ok.yaml", {"model.rope_theta=" + text}); },
                 {"model.rope_theta: expected a finite number, got '" + text + "'"});
  expect_error([&] { load_config(dir + "/ok.yaml", {"train.lr=.nan"}); }, {"train.lr: expected a finite number"});
}

// Whatever a recipe may say, the run's resolved config.yaml loads back as
// the same recipe (longtrain export and resume read it).
TEST(RecipeValues, ARunsOwnConfigAlwaysReadsBack) {
  const auto dir = temp_dir("round_trip");
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
  const auto dir = temp_dir("bytes");
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
    const auto dir = temp_dir("full_" + file);
    fs::create_symlink("/dev/full", dir + "/" + file);
    Logger logger(dir, /*append=*/true, /*tensorboard=*/false);
    expect_error(
        [&] {
          logger.line("step 1");
          logger.metrics({{"step", 1}, {"loss", 2.5}});
        },
        {dir + "/" + file, "write failed", "No space left on device"});
  }
  const auto dir = temp_dir("full_files");
  fs::create_symlink("/dev/full", dir + "/config.yaml");
  expect_error([&] { write_text_synced(dir + "/config.yaml", "model: {}\n"); }, {dir + "/config.yaml", "write failed"});
  fs::create_symlink("/dev/full", dir + "/eval.jsonl");
  expect_error([&] { append_line(dir + "/eval.jsonl", "{}"); }, {dir + "/eval.jsonl", "cannot append"});
}

TEST(Export, AnEarlierExportIsReplacedOnlyWhenTheNewOneIsWhole) {
  const auto dir = temp_dir("replace");
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
  const auto dir = temp_dir("sigbus");
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

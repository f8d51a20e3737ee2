// Recipes: parsing, presets, overrides, and one clear message per mistake,
// naming the file, line, column and key and what would be valid.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/config/config.h"
#include "core/util/error.h"

namespace lt {
namespace {

namespace fs = std::filesystem;

// Recipes are written into a temporary <root>/recipes/ beside the real presets.
std::string write_recipe(const std::string& name, const std::string& text) {
  auto dir = fs::temp_directory_path() / ("lt_config_test_" + std::to_string(::getpid())) / "recipes";
  fs::create_directories(dir);
  auto path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}

const char* kValid = R"(run_dir: runs/x
model:
  preset: tiny
data:
  seq_len: 512
train:
  steps: 10
  global_batch_tokens: 2K
)";

std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    load_config(write_recipe("r.yaml", text), overrides);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Config, LoadsPresetAndRecipe) {
  auto c = load_config(write_recipe("ok.yaml", kValid));
  EXPECT_EQ(c.model.hidden_size, 128);  // from configs/models/tiny.yaml
  EXPECT_EQ(c.data.seq_len, 512);
  EXPECT_EQ(c.train.global_batch_tokens, 2048);
  EXPECT_EQ(c.sequences_per_step(0), 4);
  EXPECT_EQ(c.checkpoint_dir(), "runs/x/checkpoints");
}

TEST(Config, OverridesWinOverRecipeAndPreset) {
  auto c = load_config(write_recipe("ok.yaml", kValid), {"train.lr=1e-3", "model.num_layers=2", "data.seq_len=1K",
                                                         "run_dir=elsewhere", "checkpoint.dir=ck"});
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.model.num_layers, 2);
  EXPECT_EQ(c.data.seq_len, 1024);
  EXPECT_EQ(c.run_dir, "elsewhere");
  EXPECT_EQ(c.checkpoint_dir(), "ck");
}

TEST(Config, Curriculum) {
  auto c = load_config(write_recipe("ok.yaml", kValid),
                       {"data.curriculum=[{until_step: 3, seq_len: 128}, {until_step: 6, seq_len: 256}]"});
  ASSERT_EQ(c.data.curriculum.size(), 2u);
  EXPECT_EQ(c.data.seq_len_at(0), 128);
  EXPECT_EQ(c.data.seq_len_at(3), 256);
  EXPECT_EQ(c.data.seq_len_at(6), 512);
  EXPECT_EQ(c.sequences_per_step(0), 16);  // tokens per step held constant
  EXPECT_EQ(c.sequences_per_step(9), 4);
}

// auto is bf16 where the device has bf16 matrix units; bf16 where it has
// none is refused with the key and the fix (LT_CPU_BF16=0 plays such a CPU).
TEST(Config, PrecisionFollowsTheDevice) {
  EXPECT_EQ(load_config(write_recipe("ok.yaml", kValid), {"train.device=cuda"}).train.precision, Precision::bf16);
  EXPECT_EQ(load_config(write_recipe("ok.yaml", kValid), {"train.precision=fp32"}).train.precision, Precision::fp32);
  ::setenv("LT_CPU_BF16", "0", 1);
  EXPECT_EQ(load_config(write_recipe("ok.yaml", kValid)).train.precision, Precision::fp32);
  const std::string message = error_of(kValid, {"train.precision=bf16"});
  ::unsetenv("LT_CPU_BF16");
  EXPECT_NE(message.find("train.precision: bf16 needs bf16 matrix instructions"), std::string::npos) << message;
  EXPECT_NE(message.find("set train.precision: fp32, or auto"), std::string::npos) << message;
}

TEST(Config, ResolvedYamlRoundTrips) {
  auto c = load_config(write_recipe("ok.yaml", kValid), {"data.curriculum=[{until_step: 3, seq_len: 128}]"});
  auto again = load_config(write_recipe("resolved.yaml", to_yaml(c)));
  EXPECT_EQ(to_yaml(again), to_yaml(c));
}

TEST(Config, RealPresetsAreValid) {
  for (const char* preset : {"tiny", "llama3-8b", "qwen2.5-7b", "mistral-7b", "mixtral-8x7b"}) {
    auto c = load_config(write_recipe("p.yaml", kValid), {std::string("model.preset=") + preset});
    EXPECT_GT(c.model.hidden_size, 0) << preset;
  }
  auto qwen = load_config(write_recipe("p.yaml", kValid), {"model.preset=qwen2.5-7b"});
  EXPECT_TRUE(qwen.model.attention_bias);
  EXPECT_EQ(qwen.model.num_kv_heads, 4);
  // A recipe's model.moe keys join the preset's, key by key.
  auto mixtral =
      load_config(write_recipe("p.yaml", kValid), {"model.preset=mixtral-8x7b", "model.moe.balance=sequence"});
  EXPECT_EQ(mixtral.model.moe.experts, 8);
  EXPECT_EQ(mixtral.model.moe.balance, BalanceScope::sequence);
}

struct ErrorCase {
  std::string name;
  std::string text;
  std::vector<std::string> overrides;
  std::vector<std::string> fragments;
};

void PrintTo(const ErrorCase& c, std::ostream* out) { *out << c.name; }

class ConfigErrors : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigErrors, NameFileKeyAndFix) {
  const auto& c = GetParam();
  const std::string message = error_of(c.text, c.overrides);
  for (const auto& fragment : c.fragments) EXPECT_NE(message.find(fragment), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
}

const std::string kBase = kValid;

INSTANTIATE_TEST_SUITE_P(
    Cases, ConfigErrors,
    ::testing::Values(
        ErrorCase{"UnknownKeySuggestion",
                  kBase + "  lrr: 0.1\n",
                  {},
                  {"r.yaml:9:3:", "unknown key 'train.lrr'", "did you mean 'train.lr'"}},
        ErrorCase{"Fp16Refused",
                  kBase + "  precision: fp16\n",
                  {},
                  {"r.yaml:9:14:", "train.precision", "fp16 is not supported", "use bf16"}},
        ErrorCase{"UnknownPrecision",
                  kBase,
                  {"train.precision=int8"},
                  {"train.precision", "must be one of: auto, fp32, bf16"}},
        ErrorCase{"Bf16ReductionOfFp32",
                  kBase,
                  {"train.precision=fp32", "parallel.reduce_dtype=bf16"},
                  {"parallel.reduce_dtype: bf16 rounds gradients of bf16 compute", "set train.precision: bf16"}},
        ErrorCase{"UnknownReduceDtype",
                  kBase,
                  {"parallel.reduce_dtype=fp8"},
                  {"parallel.reduce_dtype", "must be one of: fp32, bf16"}},
        ErrorCase{"ZeroLevelOutOfRange", kBase, {"parallel.zero=4"}, {"parallel.zero", "4"}},
        ErrorCase{
            "WrongType", kBase + "  lr: fast\n", {}, {"r.yaml:9:7:", "train.lr: expected a finite number, got 'fast'"}},
        ErrorCase{"TypoInKey", kBase + "  steps_: 3\n", {}, {"did you mean 'train.steps'"}},
        ErrorCase{"BadChoice",
                  kBase + "  schedule: exp\n",
                  {},
                  {"train.schedule", "must be one of: constant, linear, cosine, wsd"}},
        ErrorCase{"BelowRange", kBase + "  micro_batch_size: 0\n", {}, {"train.micro_batch_size", "must be >= 1"}},
        ErrorCase{"MicroBatchDoesNotDivide",
                  kBase + "  micro_batch_size: 3\n",
                  {},
                  {"train.micro_batch_size=3 does not divide the 4 sequences"}},
        ErrorCase{"BatchNotMultipleOfSeq",
                  kBase,
                  {"train.global_batch_tokens=1000"},
                  {"command line", "not a multiple of data.seq_len=512"}},
        ErrorCase{"HeadsNotDivisible",
                  kBase,
                  {"model.num_kv_heads=3"},
                  {"model.num_heads=4 is not divisible by model.num_kv_heads=3"}},
        ErrorCase{"UnknownPreset", kBase, {"model.preset=gpt5"}, {"no preset 'gpt5'", "available:"}},
        ErrorCase{"OverrideWithoutValue", kBase, {"train.lr"}, {"must look like key.path=value"}},
        ErrorCase{"IndexedWithoutPath",
                  kBase,
                  {"data.source=indexed"},
                  {"data.source 'indexed' reads data.path", "or data.mixture"}},
        ErrorCase{"MinLrAboveLr", kBase, {"train.min_lr=1"}, {"train.min_lr=1", "must be <= train.lr"}},
        ErrorCase{"WarmupLongerThanRun",
                  kBase + "  warmup_steps: 11\n",
                  {},
                  {"train.warmup_steps=11 must be <= train.steps=10"}},
        ErrorCase{"SectionNotAMapping",
                  "model:\n  preset: tiny\ntrain: [1, 2]\n",
                  {},
                  {"r.yaml:3:8:", "train: expected a mapping"}},
        ErrorCase{"MissingRequiredKey", "model:\n  vocab_size: 100\n", {}, {"model.hidden_size is required"}},
        ErrorCase{"InvalidYaml", "model: {preset: tiny\n", {}, {"r.yaml:", "invalid YAML"}},
        ErrorCase{"CurriculumNotAList", kBase, {"data.curriculum=5"}, {"data.curriculum: expected a list of mappings"}},
        ErrorCase{"CurriculumUnknownKey",
                  kBase,
                  {"data.curriculum=[{until: 3, seq_len: 128}]"},
                  {"unknown key 'data.curriculum[0].until'", "did you mean 'data.curriculum[0].until_step'"}},
        ErrorCase{"CurriculumOrder",
                  kBase,
                  {"data.curriculum=[{until_step: 5, seq_len: 128}, {until_step: 2, seq_len: 256}]"},
                  {"until_step must increase"}},
        ErrorCase{"CurriculumLengthDoesNotDivideBatch",
                  kBase,
                  {"data.curriculum=[{until_step: 5, seq_len: 300}]"},
                  {"not a multiple of data.curriculum[0].seq_len=300"}},
        ErrorCase{"CurriculumItemLocated",
                  kBase.substr(0, kBase.find("train:")) + "  curriculum:\n    - {until_step: 0, seq_len: 128}\n" +
                      kBase.substr(kBase.find("train:")),
                  {},
                  {"r.yaml:7:20:", "data.curriculum[0].until_step: got 0, must be >= 1"}},
        ErrorCase{"UnknownTopLevelKey", kBase + "colour: red\n", {}, {"unknown key 'colour'", "valid keys here:"}},
        ErrorCase{"TpDoesNotDivideHeads",
                  kBase,
                  {"parallel.tp=3"},
                  {"model.num_heads=4 is not divisible by parallel.tp=3", "whole heads"}},
        ErrorCase{"TpAndKvHeads",
                  kBase,
                  {"model.num_heads=6", "model.num_kv_heads=3", "model.head_dim=32", "parallel.tp=2"},
                  {"parallel.tp=2 and model.num_kv_heads=3 must divide one another"}},
        ErrorCase{"MoreStagesThanLayers",
                  kBase,
                  {"parallel.pp=5"},
                  {"parallel.pp=5 exceeds model.num_layers=4", "every pipeline stage needs a layer"}},
        ErrorCase{"OffloadedInputsWithoutRecompute",
                  kBase,
                  {"memory.offload_activations=true"},
                  {"memory.offload_activations moves the inputs of recomputed layers", "set memory.checkpoint"}},
        ErrorCase{"ChunksWithoutFullRecompute",
                  kBase,
                  {"memory.offload_model=true", "memory.checkpoint=mlp"},
                  {"memory.offload_model brings each layer's weights back", "memory.checkpoint: full"}},
        ErrorCase{"ScaledRopeWithoutItsOriginalContext",
                  kBase,
                  {"model.rope.type=yarn", "model.rope.factor=4"},
                  {"model.rope.type=yarn needs model.rope.original_max_seq_len"}},
        ErrorCase{"PasskeyLengthsNotAList",
                  kBase,
                  {"eval.passkey_lengths=1024"},
                  {"eval.passkey_lengths: expected a list of integers"}},
        ErrorCase{"PathAndMixtureTogether",
                  kBase,
                  {"data.source=indexed", "data.path=a", "data.mixture=[{path: b, weight: 1}]"},
                  {"reads data.path (prefix of .bin/.idx) or data.mixture", "set exactly one"}},
        ErrorCase{"UpsampleWithoutShare",
                  kBase,
                  {"data.source=indexed", "data.path=a", "data.upsample_long.min_length=32K"},
                  {"data.upsample_long needs both min_length", "share"}},
        ErrorCase{"ExportAsAFamilyThatCannotHoldTheModel",
                  kBase,
                  {"model.moe.experts=4", "checkpoint.export_hf=bfloat16"},
                  {"checkpoint.export_hf writes the model as its family's HF class", "model.family llama is dense"}},
        ErrorCase{
            "ExportDtype", kBase, {"checkpoint.export_hf=fp8"}, {"checkpoint.export_hf", "bfloat16, float16, float32"}},
        ErrorCase{"UnknownRopeType", kBase, {"model.rope.type=ntk"}, {"model.rope.type", "must be one of"}},
        ErrorCase{"DenseLayerBeyondTheModel",
                  kBase,
                  {"model.moe.experts=4", "model.moe.dense_layers=[1, 9]"},
                  {"model.moe.dense_layers names layer 9 of a model of", "(they count from 0)"}},
        ErrorCase{"ExpertWidthNotAMultipleOf8",
                  kBase,
                  {"model.moe.experts=4", "model.moe.expert_intermediate_size=30"},
                  {"model.moe.expert_intermediate_size", "the expert width (30) to be multiples of 8"}},
        ErrorCase{"MoreChosenExpertsThanExist",
                  kBase,
                  {"model.moe.experts=4", "model.moe.top_k=5"},
                  {"model.moe.top_k=5 exceeds model.moe.experts=4"}},
        ErrorCase{"ExpertsNotDivisibleByEp",
                  kBase,
                  {"model.moe.experts=6", "parallel.ep=4"},
                  {"model.moe.experts=6 is not divisible by parallel.ep=4"}},
        ErrorCase{"ExpertsWithTensorParallelism",
                  kBase,
                  {"model.moe.experts=4", "parallel.tp=2"},
                  {"mixture-of-experts layers are not yet split by tensor parallelism"}},
        ErrorCase{"ExpertsWithTiledMlp",
                  kBase,
                  {"model.moe.experts=4", "memory.mlp_tiles=2"},
                  {"a mixture-of-experts model needs memory.mlp_tiles: 1"}},
        ErrorCase{"ChunksWithExpertParallelism",
                  kBase,
                  {"model.moe.experts=4", "parallel.ep=2", "memory.offload_model=true", "memory.checkpoint=full"},
                  {"memory.offload_model is not yet combined with expert parallelism"}},
        ErrorCase{"UnknownBalance",
                  kBase,
                  {"model.moe.balance=batch"},
                  {"model.moe.balance", "must be one of: micro_batch, global_batch, sequence"}},
        ErrorCase{"ChunksWithTensorParallelism",
                  kBase,
                  {"memory.offload_model=true", "memory.checkpoint=full", "parallel.tp=2"},
                  {"memory.offload_model is not yet combined with tensor parallelism"}},
        ErrorCase{"AutoPlanWithoutBudget",
                  kBase,
                  {"memory.plan=auto"},
                  {"memory.plan: auto fits the step into memory.device_budget_gb: set the budget"}},
        ErrorCase{"UnknownPlan", kBase, {"memory.plan=magic"}, {"memory.plan", "must be one of: manual, auto"}},
        ErrorCase{"UlyssesBeyondTpHeads",
                  kBase,
                  {"parallel.tp=2", "parallel.sp.ulysses=4"},
                  {"parallel.sp.ulysses=4 exceeds the 2 heads of a tensor-parallel rank"}},
        ErrorCase{"AdaptiveWithStaticSequenceParallelism",
                  kBase,
                  {"data.packing=adaptive", "parallel.sp.ulysses=2"},
                  {"data.packing: adaptive forms its own sequence-parallel groups", "parallel.sp.ulysses"}},
        ErrorCase{"AdaptiveGroupNotAPowerOfTwo",
                  kBase,
                  {"data.packing=adaptive", "parallel.adaptive.group=3"},
                  {"parallel.adaptive.group=3 must be a power of two"}},
        ErrorCase{"AdaptiveGroupBeyondHeads",
                  kBase,
                  {"data.packing=adaptive", "parallel.adaptive.max_group=8"},
                  {"groups may not exceed model.num_heads=4"}},
        ErrorCase{"UnknownAdaptivePlanner",
                  kBase,
                  {"data.packing=adaptive", "parallel.adaptive.planner=cbc"},
                  {"parallel.adaptive.planner", "must be one of: milp, uniform"}}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return info.param.name; });

TEST(Config, MissingRecipe) {
  try {
    load_config("does/not/exist.yaml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "does/not/exist.yaml: recipe not found");
  }
}

}  // namespace
}  // namespace lt

// HF checkpoints: our export read back by our import (config and every
// tensor), config.json's RoPE forms, and every malformed input named. The
// oracle test (HfOracle, run by ctest after tests/oracle/hf_models.py)
// checks both directions against transformers itself.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/checkpoint/safetensors.h"
#include "core/config/config.h"
#include "core/config/hf_config.h"
#include "core/data/batch.h"
#include "core/hf/hf_weights.h"
#include "core/model/loss.h"
#include "core/util/error.h"
#include "tests/support/reference.h"

namespace fs = std::filesystem;

namespace lt {
namespace {

using testing::expect_error;
using testing::write_text;

// A recipe that starts from the HF model in `dir`, with recipe keys `extra`.
Config from_hf(const std::string& dir, const std::string& extra = "") {
  const std::string recipe = dir + "_recipe.yaml";
  write_text(recipe, "init:\n  from_hf: " + dir + "\ndata:\n  seq_len: 64\n" + extra);
  return load_config(recipe);
}

std::string model_yaml(const ModelConfig& m) {
  Config c;
  c.model = m;
  c.model.preset.clear();
  return to_yaml(c);
}

// Weights that are not what any seed initialises: visible norms and biases.
LlamaForCausalLM random_model(const ModelConfig& m, uint64_t seed) {
  LlamaForCausalLM model(m);
  model->initialize(seed);
  at::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(at::randn_like(p) * 0.1);
  return model;
}

// `out`, an export of `model` (of config `m`), read back: the same config
// and tensors.
void expect_reads_back(const ModelConfig& m, LlamaForCausalLMImpl& model, const std::string& out) {
  const Config imported = from_hf(out);
  EXPECT_EQ(model_yaml(imported.model), model_yaml(m));
  LlamaForCausalLM back(imported.model);
  load_hf_weights(out, *back);
  auto want = model.named_parameters();
  for (const auto& item : back->named_parameters())
    EXPECT_TRUE(at::equal(item.value(), want[item.key()])) << item.key();
}

ModelConfig yarn_model() {
  ModelConfig m = testing::tiny_model(/*tied=*/true, /*bias=*/true);
  m.head_dim = 12;
  m.max_seq_len = 2048;
  m.rms_norm_eps = 1e-6;
  m.rope_theta = 1e6;
  m.rope.type = RopeType::yarn;
  m.rope.factor = 4;
  m.rope.original_max_seq_len = 512;
  m.rope.beta_fast = 24;
  return m;
}

TEST(HfCheckpoint, ExportThenImportGivesTheSameConfigAndTensors) {
  const std::string dir = testing::scratch_dir("hf_test", "round_trip");
  for (ModelConfig m : {yarn_model(), testing::tiny_model()}) {
    if (!m.rope.scaled()) m.rope = {RopeType::llama3, 8, 256, 1, 4};
    m.head_dim = m.resolved_head_dim();                 // written resolved
    m.attention_block = ModelConfig{}.attention_block;  // our kernel's setting: HF has no word for it
    SCOPED_TRACE(name(m.rope.type));
    auto model = random_model(m, 5);
    const std::string out = dir + "/" + name(m.rope.type);
    export_hf(m, *model, out, {"float32", 2e-5});  // 20 KB shards: several files and the index
    int files = 0;
    for (const auto& entry : fs::directory_iterator(out)) files += entry.path().extension() == ".safetensors";
    EXPECT_GT(files, 1);
    EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json"));
    expect_reads_back(m, *model, out);

    // bf16: the same tensors rounded once.
    export_hf(m, *model, out + "_bf16", {});
    LlamaForCausalLM back(m);
    load_hf_weights(out + "_bf16", *back);
    auto want = model->named_parameters();
    for (const auto& item : back->named_parameters())
      EXPECT_TRUE(at::equal(item.value(), want[item.key()].to(at::kBFloat16).to(at::kFloat))) << item.key();
  }
}

// A tiny model of each family longtrain imports beyond Llama's: Qwen3 (q/k
// norms, tied), Qwen3-MoE with a dense layer among its MoE layers,
// Qwen2-MoE with its shared expert, Mixtral.
ModelConfig family_model(Family family) {
  const bool qwen2_moe = family == Family::qwen2_moe;
  ModelConfig m = testing::tiny_model(/*tied=*/family == Family::qwen3, /*bias=*/qwen2_moe);
  m.family = family;
  m.qk_norm = family == Family::qwen3 || family == Family::qwen3_moe;
  m.head_dim = m.resolved_head_dim();                 // written resolved
  m.attention_block = ModelConfig{}.attention_block;  // our kernel's setting: HF has no word for it
  if (family == Family::qwen3) return m;
  m.num_layers = 3;
  m.moe.experts = 4;
  m.moe.top_k = 2;
  m.moe.normalize_top_k = !qwen2_moe;
  if (family == Family::mixtral) return m;
  m.moe.expert_intermediate_size = 16;
  if (qwen2_moe) m.moe.shared_expert_intermediate_size = 24;
  else m.moe.dense_layers = {1};
  return m;
}

const std::vector<Family> kNewFamilies = {Family::qwen3, Family::qwen3_moe, Family::qwen2_moe, Family::mixtral};

// Each family is written as its own HF class, in the per-expert tensors of
// every HF checkpoint, and read back to the same config and tensors; an
// expert-parallel rank reads just its experts.
TEST(HfCheckpoint, EveryFamilyExportsAndImportsItself) {
  const std::string dir = testing::scratch_dir("hf_test", "families");
  for (const Family family : kNewFamilies) {
    SCOPED_TRACE(name(family));
    const ModelConfig m = family_model(family);
    auto model = random_model(m, 11);
    const std::string out = dir + "/" + name(family);
    export_hf(m, *model, out, {"float32", 2e-5});
    const auto config = nlohmann::json::parse(std::ifstream(out + "/config.json"));
    EXPECT_EQ(config.at("model_type"), name(family));
    const auto index = nlohmann::json::parse(std::ifstream(out + "/model.safetensors.index.json"));
    const auto& names = index.at("weight_map");
    if (family == Family::mixtral) {
      EXPECT_TRUE(names.contains("model.layers.0.block_sparse_moe.experts.3.w3.weight"));
    }
    if (family == Family::qwen3_moe) {
      EXPECT_TRUE(names.contains("model.layers.0.mlp.experts.3.up_proj.weight"));
      EXPECT_TRUE(names.contains("model.layers.1.mlp.up_proj.weight"));  // the dense layer
    }
    if (family == Family::qwen3) {
      EXPECT_TRUE(names.contains("model.layers.0.self_attn.k_norm.weight"));
    }

    expect_reads_back(m, *model, out);
    if (!m.moe.enabled()) continue;
    ModelShard second_half;
    second_half.ep_rank = 1, second_half.ep_size = 2;
    LlamaForCausalLM expert_rank(m, second_half);
    load_hf_weights(out, *expert_rank);
    const auto experts = expert_rank->named_parameters()["model.layers.0.mlp.experts.down_proj"];
    EXPECT_TRUE(at::equal(experts, model->named_parameters()["model.layers.0.mlp.experts.down_proj"].narrow(0, 2, 2)));
  }
}

// Nothing of a checkpoint is dropped: a tensor the model would not read, a
// config key that may change the model, a feature it lacks are refused in
// one line naming them.
TEST(HfCheckpoint, StrictImportRefusesWhatItWouldDrop) {
  const std::string dir = testing::scratch_dir("hf_test", "strict");
  auto exported = [&](Family family, const std::string& name) {
    const ModelConfig m = family_model(family);
    export_hf(m, *random_model(m, 3), dir + "/" + name, {"float32", 5});
    return dir + "/" + name;
  };
  auto edit = [&](const std::string& d, const std::function<void(nlohmann::json&)>& change) {
    auto json = nlohmann::json::parse(std::ifstream(d + "/config.json"));
    change(json);
    write_text(d + "/config.json", json.dump());
  };
  // A Qwen3 checkpoint passed off as Llama: its q/k norms would be dropped.
  std::string d = exported(Family::qwen3, "qwen3_as_llama");
  edit(d, [](nlohmann::json& j) { j["model_type"] = "llama", j["architectures"] = {"LlamaForCausalLM"}; });
  LlamaForCausalLM llama(from_hf(d).model);
  expect_error([&] { load_hf_weights(d, *llama); },
               {d + "/model.safetensors", "tensor 'model.layers.0.self_attn.k_norm.weight'", "not a parameter"});
  // An expert the config does not have.
  d = exported(Family::qwen3_moe, "extra_expert");
  auto tensors = load_safetensors(d + "/model.safetensors");
  tensors["model.layers.0.mlp.experts.4.up_proj.weight"] = at::zeros({16, 32});
  tensors["model.rotary_emb.inv_freq"] = at::zeros({4});  // a buffer: allowed
  save_safetensors(d + "/model.safetensors", NamedTensors(tensors.begin(), tensors.end()));
  LlamaForCausalLM moe(from_hf(d).model);
  expect_error([&] { load_hf_weights(d, *moe); }, {"tensor 'model.layers.0.mlp.experts.4.up_proj.weight'"});
  // A tied model whose lm_head differs from its embedding.
  d = exported(Family::qwen3, "tied_head");
  tensors = load_safetensors(d + "/model.safetensors");
  tensors["lm_head.weight"] = tensors.at("model.embed_tokens.weight") + 1;
  save_safetensors(d + "/model.safetensors", NamedTensors(tensors.begin(), tensors.end()));
  LlamaForCausalLM tied(from_hf(d).model);
  expect_error([&] { load_hf_weights(d, *tied); }, {"'lm_head.weight' differs from model.embed_tokens.weight"});
  tensors["lm_head.weight"] = tensors.at("model.embed_tokens.weight");
  save_safetensors(d + "/model.safetensors", NamedTensors(tensors.begin(), tensors.end()));
  load_hf_weights(d, *tied);  // an identical copy is transformers' own habit

  // config.json: keys that would change the model.
  const std::vector<std::tuple<std::string, Family, std::function<void(nlohmann::json&)>, std::string>> keys = {
      {"unknown_key", Family::qwen3, [](nlohmann::json& j) { j["logit_softcapping"] = 30.0; },
       "logit_softcapping=30.0: not a key longtrain reads"},
      {"quantized", Family::qwen3,
       [](nlohmann::json& j) {
         j["quantization_config"] = {{"bits", 4}};
       },
       "quantization_config="},
      {"o_bias", Family::qwen3, [](nlohmann::json& j) { j["attention_bias"] = true; }, "without o_proj's"},
      {"rope_string", Family::qwen3, [](nlohmann::json& j) { j["rope_scaling"] = "linear"; },
       "rope_scaling: should be a mapping"},
      {"partial_rotary", Family::qwen3, [](nlohmann::json& j) { j["partial_rotary_factor"] = 0.5; },
       "partial_rotary_factor=0.5"},
      {"windows", Family::qwen3_moe,
       [](nlohmann::json& j) {
         j["layer_types"] = {"full_attention", "sliding_attention", "full_attention"};
       },
       "layer_types="},
      {"qwen_window", Family::qwen3,
       [](nlohmann::json& j) { j["use_sliding_window"] = true, j["sliding_window"] = 128; }, "sliding_window=128"},
      {"jitter", Family::mixtral, [](nlohmann::json& j) { j["router_jitter_noise"] = 0.1; }, "router_jitter_noise"},
      {"classifier", Family::qwen3, [](nlohmann::json& j) { j["architectures"] = {"Qwen3ForSequenceClassification"}; },
       "architectures="},
  };
  for (const auto& [name, family, change, message] : keys) {
    d = exported(family, name);
    edit(d, change);
    expect_error([&] { from_hf(d); }, {d + "/config.json", message});
  }
}

// A model is exported only as a class that holds it.
TEST(HfCheckpoint, ExportRefusesAFamilyThatCannotHoldTheModel) {
  ModelConfig m = family_model(Family::qwen3);
  m.family = Family::llama;
  auto model = random_model(m, 1);
  const std::string dir = testing::scratch_dir("hf_test", "wrong_family");
  expect_error([&] { export_hf(m, *model, dir + "/out", {}); }, {"model.family llama has no q/k norms"});
  m = family_model(Family::qwen2_moe);
  m.family = Family::qwen3_moe;
  expect_error([&] { hf_config_json(m, "float32"); }, {"model.family qwen3_moe has no q/k/v biases"});
}

// transformers 5 writes rope_parameters; older versions rope_theta with
// rope_scaling, whose type is "type" or "rope_type"; DeepSeek-style YaRN
// gives mscale and mscale_all_dim instead of the attention factor.
TEST(HfCheckpoint, ReadsEveryRopeForm) {
  const std::string dir = testing::scratch_dir("hf_test", "rope_forms");
  const std::string common = R"("model_type": "llama", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096)";
  auto read = [&](const std::string& name, const std::string& rope) {
    fs::create_directories(dir + "/" + name);
    write_text(dir + "/" + name + "/config.json", "{" + common + ", " + rope + "}");
    return from_hf(dir + "/" + name).model;
  };
  auto m = read("plain", R"("rope_theta": 500000)");
  EXPECT_EQ(m.rope_theta, 500000);
  EXPECT_EQ(m.rope.type, RopeType::standard);
  EXPECT_EQ(m.num_kv_heads, 4);  // absent: as many as heads
  EXPECT_EQ(m.max_seq_len, 4096);

  m = read("legacy", R"("rope_theta": 10000, "rope_scaling": {"type": "linear", "factor": 4.0})");
  EXPECT_EQ(m.rope.type, RopeType::linear);
  EXPECT_EQ(m.rope.factor, 4);

  m = read("new", R"("rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  EXPECT_EQ(m.rope_theta, 500000);
  EXPECT_EQ(m.rope.type, RopeType::llama3);
  EXPECT_EQ(m.rope.original_max_seq_len, 8192);
  EXPECT_EQ(m.rope.high_freq_factor, 4);

  m = read("yarn_mscale", R"("rope_scaling": {"rope_type": "yarn", "factor": 40, "mscale": 1.0,
    "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096})");
  EXPECT_NEAR(m.rope.attention_factor, (0.1 * std::log(40.0) + 1) / (0.1 * 0.707 * std::log(40.0) + 1), 1e-12);
  m = read("yarn_no_factor", R"("rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 1024})");
  EXPECT_EQ(m.rope.factor, 4);  // max_position_embeddings / original

  // Dynamic NTK scales beyond max_position_embeddings, which is the original.
  m = read("dynamic", R"("rope_scaling": {"type": "dynamic", "factor": 2.0})");
  EXPECT_EQ(m.rope.original_max_seq_len, 4096);
  EXPECT_EQ(m.max_seq_len, 4096);

  // The recipe's keys win: a context extension sets a new base.
  fs::create_directories(dir + "/extended");
  write_text(dir + "/extended/config.json", "{" + common + R"(, "rope_theta": 10000})");
  const Config extended = from_hf(dir + "/extended", "model:\n  rope_theta: 8.0e6\n  max_seq_len: 65536\n");
  EXPECT_EQ(extended.model.rope_theta, 8e6);
  EXPECT_EQ(extended.model.max_seq_len, 65536);
  EXPECT_EQ(extended.model.hidden_size, 32);
}

TEST(HfCheckpoint, BadInputsNameTheFileAndTensor) {
  const std::string dir = testing::scratch_dir("hf_test", "errors");
  const ModelConfig m = testing::tiny_model();
  auto model = random_model(m, 7);
  const std::string good = dir + "/good";
  export_hf(m, *model, good, {"float32", 2e-5});
  auto copy = [&](const std::string& name) {
    fs::copy(good, dir + "/" + name);
    return dir + "/" + name;
  };
  const std::string config = good + "/config.json";

  // config.json
  std::string d = copy("malformed");
  write_text(d + "/config.json", "{\"model_type\": \"llama\",");
  expect_error([&] { from_hf(d); }, {d + "/config.json", "malformed JSON"});
  d = copy("type");
  write_text(d + "/config.json", R"({"model_type": "gpt2"})");
  expect_error([&] { from_hf(d); }, {d + "/config.json", "model_type=\"gpt2\"",
                                     "llama, mistral, qwen2, qwen3, qwen2_moe, qwen3_moe and mixtral"});
  d = copy("missing_key");
  write_text(d + "/config.json", R"({"model_type": "llama", "vocab_size": 96})");
  expect_error([&] { from_hf(d); }, {d + "/config.json", "missing key 'hidden_size'"});
  d = copy("window");
  write_text(d + "/config.json",
             R"({"model_type": "mistral", "sliding_window": 4096, "max_position_embeddings": 32768})");
  expect_error([&] { from_hf(d); }, {"sliding_window=4096", "sliding-window attention is not implemented"});
  d = copy("rope");
  auto json = nlohmann::json::parse(std::ifstream(config));
  json["rope_scaling"] = {{"rope_type", "longrope"}};
  write_text(d + "/config.json", json.dump());
  expect_error([&] { from_hf(d); }, {"rope_type=\"longrope\"", "default, linear, dynamic, yarn, llama3"});
  expect_error([&] { from_hf(dir + "/none"); }, {dir + "/none/config.json", "cannot open"});
  d = copy("fraction");
  json = nlohmann::json::parse(std::ifstream(config));
  json["vocab_size"] = 96.5;  // nlohmann alone would read 96
  write_text(d + "/config.json", json.dump());
  expect_error([&] { from_hf(d); }, {d + "/config.json", "'vocab_size' should be an integer, is 96.5"});

  // The weights.
  LlamaForCausalLM target(m);
  d = copy("missing_shard");
  fs::remove(d + "/model-00002-of-" + [&] {
    const auto index = nlohmann::json::parse(std::ifstream(good + "/model.safetensors.index.json"));
    const std::string any = index.at("weight_map").begin().value();
    return any.substr(any.find("-of-") + 4);
  }());
  expect_error([&] { load_hf_weights(d, *target); }, {d + "/model-00002-of-", "missing shard", "names it for '"});
  d = copy("missing_tensor");
  auto index = nlohmann::json::parse(std::ifstream(d + "/model.safetensors.index.json"));
  index["weight_map"].erase("model.norm.weight");
  write_text(d + "/model.safetensors.index.json", index.dump());
  expect_error([&] { load_hf_weights(d, *target); }, {"model.safetensors.index.json", "no tensor 'model.norm.weight'"});
  expect_error([&] { load_hf_weights(dir + "/none", *target); }, {dir + "/none", "neither model.safetensors"});
  d = copy("escape");
  index = nlohmann::json::parse(std::ifstream(d + "/model.safetensors.index.json"));
  index["weight_map"]["model.norm.weight"] = "../good/model-00001-of-00002.safetensors";
  write_text(d + "/model.safetensors.index.json", index.dump());
  expect_error([&] { load_hf_weights(d, *target); },
               {"model.safetensors.index.json", "weight_map['model.norm.weight']", "not a plain file name"});

  // One file with a wrong dtype, a wrong shape, a truncated one.
  auto single = [&](const std::string& name, const NamedTensors& replace) {
    const std::string out = dir + "/" + name;
    fs::create_directories(out);
    NamedTensors tensors;
    for (const auto& item : model->named_parameters()) tensors.emplace_back(item.key(), item.value());
    for (const auto& [key, value] : replace)
      for (auto& [k, v] : tensors)
        if (k == key) v = value;
    save_safetensors(out + "/model.safetensors", tensors);
    return out;
  };
  d = single("int8", {{"model.layers.1.mlp.up_proj.weight", at::zeros({64, 32}, at::kChar)}});
  expect_error([&] { load_hf_weights(d, *target); },
               {d + "/model.safetensors", "'model.layers.1.mlp.up_proj.weight' is Char", "F32, BF16 or F16"});
  d = single("shape", {{"model.layers.0.self_attn.k_proj.weight", at::zeros({32, 32})}});
  expect_error([&] { load_hf_weights(d, *target); },
               {d + "/model.safetensors", "'model.layers.0.self_attn.k_proj.weight' has shape [32, 32]", "[16, 32]"});
  d = single("truncated", {});
  fs::resize_file(d + "/model.safetensors", fs::file_size(d + "/model.safetensors") - 100);
  expect_error([&] { load_hf_weights(d, *target); }, {d + "/model.safetensors", "truncated file"});

  // Export refuses to overwrite.
  expect_error([&] { export_hf(m, *model, good, {}); }, {good, "already exists"});
  expect_error([&] { export_hf(m, *model, dir + "/f8", {"float8"}); }, {"--dtype float8"});
}

// The oracle: models transformers wrote (tests/oracle/hf_models.py write),
// imported, give transformers' loss (in bf16, its bf16 autocast loss) and
// RoPE frequencies; exported again
// for the script's read step. Runs only where the script ran first.
TEST(HfOracle, ImportReproducesTransformersAndExportsForIt) {
  const char* root = std::getenv("LT_HF_ORACLE_DIR");
  if (!root) GTEST_SKIP() << "run by ctest after tests/oracle/hf_models.py";
  const auto expected = nlohmann::json::parse(std::ifstream(std::string(root) + "/expected.json"));
  const auto ids = at::tensor(expected.at("tokens").get<std::vector<int64_t>>(), at::kLong).view({1, -1});
  const int64_t n = ids.size(1);
  Batch batch{ids,
              at::cat({ids.narrow(1, 1, n - 1), at::full({1, 1}, kIgnoreIndex, at::kLong)}, 1),
              at::arange(n, at::kLong).view({1, n}),
              {},
              {},
              nullptr};
  for (const auto& [name, want] : expected.at("models").items()) {
    SCOPED_TRACE(name);
    const std::string dir = std::string(root) + "/" + name;
    const Config config = from_hf(dir);
    // The first step's gradient of every parameter, by transformers' names
    // (ours are the same: its in-memory names, stacked experts included).
    {
      LlamaForCausalLM blunt(config.model);
      load_hf_weights(dir + "_gradients", *blunt);
      (loss_sum(*blunt, batch) / (n - 1)).backward();
      const auto hf_grads = load_safetensors(dir + "_gradients/grads.safetensors");
      auto ours = blunt->named_parameters();
      EXPECT_EQ(hf_grads.size(), ours.size());
      double worst = 0;
      for (const auto& [key, grad] : hf_grads) {
        ASSERT_TRUE(ours.contains(key)) << key;
        const double error = testing::relative_error(ours[key].grad(), grad);
        EXPECT_LT(error, 1e-5) << key;
        worst = std::max(worst, error);
      }
      std::cout << name << ": " << hf_grads.size() << " gradients, largest relative error " << worst << "\n";
    }
    LlamaForCausalLM model(config.model);
    load_hf_weights(dir, *model);
    at::NoGradGuard no_grad;
    const double loss = loss_sum(*model, batch).item<double>() / (n - 1);
    EXPECT_NEAR(loss, want.at("loss").get<double>(), 1e-5 * loss);
    // In bf16 against transformers' bf16 autocast: two roundings of the same
    // model, within 1e-2.
    LlamaForCausalLM bf16(config.model, testing::precision_shard("bf16"));
    load_hf_weights(dir, *bf16);
    const double bf16_loss = loss_sum(*bf16, batch).item<double>() / (n - 1);
    EXPECT_NEAR(bf16_loss, want.at("bf16_autocast_loss").get<double>(), 1e-2 * bf16_loss);
    const auto rope = rope_frequencies(config.model);
    const auto hf = at::tensor(want.at("inv_freq").get<std::vector<double>>(), at::kDouble);
    EXPECT_LT(testing::relative_error(rope.inv_freq, hf), 1e-6);
    EXPECT_NEAR(rope.attention_factor, want.at("attention_factor").get<double>(), 1e-6);
    const std::string out = std::string(root) + "/exported/" + name;
    fs::remove_all(out);
    fs::create_directories(std::string(root) + "/exported");
    export_hf(config.model, *model, out, {"float32", 5});
  }
}

}  // namespace
}  // namespace lt

// Building blocks against their formulas, and the whole model against a
// naive re-implementation: logits and the gradient of every parameter.
#include <gtest/gtest.h>

#include <cmath>

#include "core/model/llama.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::relative_error;

TEST(Rope, MatchesFormula) {
  const int64_t d = 8;
  const double theta = 500000;
  RotaryEmbedding rope(d, theta);
  auto positions = at::tensor({0L, 1L, 7L, 131071L, 2000000L}, at::kLong).view({1, 5});
  auto x = at::randn({1, 5, 1, d});
  auto [cos, sin] = rope.cos_sin(positions);
  auto y = apply_rotary(x, cos, sin);
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t i = 0; i < d / 2; ++i) {
      const double angle = positions[0][t].item<double>() * std::pow(theta, -2.0 * i / d);
      const double a = x[0][t][0][i].item<double>(), b = x[0][t][0][i + d / 2].item<double>();
      EXPECT_NEAR(y[0][t][0][i].item<double>(), a * std::cos(angle) - b * std::sin(angle), 1e-5);
      EXPECT_NEAR(y[0][t][0][i + d / 2].item<double>(), b * std::cos(angle) + a * std::sin(angle), 1e-5);
    }
}

TEST(Rope, PreservesNorm) {
  RotaryEmbedding rope(16, 10000);
  auto x = at::randn({2, 9, 3, 16});
  auto [cos, sin] = rope.cos_sin(at::arange(9, at::kLong).view({1, 9}).expand({2, 9}));
  EXPECT_LT(relative_error(apply_rotary(x, cos, sin).norm(2, -1), x.norm(2, -1)), 1e-6);
}

TEST(RMSNorm, MatchesFormula) {
  RMSNorm norm(6, 1e-6);
  {
    at::NoGradGuard no_grad;
    norm->weight.copy_(at::arange(1, 7, at::kFloat));
  }
  auto x = at::randn({3, 6});
  auto expected = norm->weight * x / at::sqrt(x.pow(2).mean(-1, true) + 1e-6);
  EXPECT_LT(relative_error(norm(x), expected), 1e-6);
}

void check_model(const ModelConfig& config, bool documents) {
  LlamaForCausalLM model(config);
  model->initialize(42);
  const int64_t b = 2, s = 29;
  auto tokens = at::randint(config.vocab_size, {b, s}, at::kLong);
  auto positions = at::arange(s, at::kLong).view({1, s}).expand({b, s}).contiguous();
  at::Tensor docs;
  if (documents) {
    docs = (at::arange(s, at::kLong) >= 11).to(at::kLong).view({1, s}).expand({b, s}).contiguous();
    positions = at::where(docs.eq(1), positions - 11, positions);
  }
  AttentionMask mask{true, docs, docs, {}, {}, nullptr};
  auto logits = model->forward({tokens, positions, mask});

  std::map<std::string, at::Tensor> weights;
  for (const auto& item : model->named_parameters())
    weights[item.key()] = item.value().detach().clone().requires_grad_();
  auto expected = testing::naive_llama_logits(config, weights, tokens, positions, docs);
  EXPECT_LT(relative_error(logits, expected), 1e-5);

  auto w = at::randn_like(expected);
  (logits * w).sum().backward();
  (expected * w).sum().backward();
  for (const auto& item : model->named_parameters())
    EXPECT_LT(relative_error(item.value().grad(), weights[item.key()].grad()), 1e-5) << item.key();
}

TEST(Llama, MatchesNaiveModel) { check_model(testing::tiny_model(), false); }
TEST(Llama, MatchesNaiveModelPackedDocuments) { check_model(testing::tiny_model(), true); }
TEST(Llama, MatchesNaiveModelTiedWithBias) { check_model(testing::tiny_model(true, true), true); }
TEST(Llama, MatchesNaiveModelBlockwiseKernel) {
  auto config = testing::tiny_model();
  config.attention = AttentionKernel::blockwise;
  check_model(config, true);
}

TEST(Llama, HuggingFaceParameterNames) {
  LlamaForCausalLM model(testing::tiny_model());
  auto params = model->named_parameters();
  for (const char* name :
       {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight"})
    EXPECT_NE(params.find(name), nullptr) << name;
}

TEST(Llama, InitializationIsDeterministic) {
  LlamaForCausalLM a(testing::tiny_model()), b(testing::tiny_model());
  a->initialize(5);
  b->initialize(5);
  for (const auto& item : a->named_parameters())
    EXPECT_TRUE(item.value().equal(b->named_parameters()[item.key()])) << item.key();
}

// A rank's model holds exactly its slices of the full model's weights:
// Megatron's column/row/vocabulary split, kv heads split (tp 2) or shared
// (tp 4 over 2 kv heads), norms whole; initialised to the same values.
TEST(Llama, TensorParallelSlicesOfTheSameWeights) {
  const ModelConfig c = testing::tiny_model(false, true);
  LlamaForCausalLM full(c);
  full->initialize(9);
  auto whole = full->named_parameters();
  for (int64_t tp : {2, 4})
    for (int64_t rank = 0; rank < tp; ++rank) {
      ModelShard shard;
      shard.tp_rank = rank, shard.tp_size = tp;
      LlamaForCausalLM part(c, shard);
      part->initialize(9);
      for (const auto& item : part->named_parameters()) {
        const auto& p = item.value();
        const TensorSlice s = part->slice_of(item.key());
        EXPECT_TRUE(p.equal(whole[item.key()].narrow(s.dim, s.offset, p.size(s.dim)))) << item.key() << " tp " << tp;
      }
      const auto q = part->slice_of("model.layers.0.self_attn.q_proj.weight");
      EXPECT_EQ(q.offset, rank * c.num_heads / tp * 8);
      EXPECT_EQ(part->slice_of("model.layers.0.self_attn.o_proj.weight").dim, 1);
      EXPECT_EQ(part->slice_of("model.layers.0.mlp.down_proj.weight").dim, 1);
      const auto k = part->slice_of("model.layers.0.self_attn.k_proj.bias");
      EXPECT_EQ(k.offset, (tp == 2 ? rank : rank / 2) * 8);  // 2 kv heads of 8 dims
      EXPECT_EQ(k.copies, tp == 4 ? 2 : 1);
      EXPECT_EQ(part->slice_of("model.norm.weight").copies, tp);
      EXPECT_EQ(part->named_parameters()["lm_head.weight"].size(0), c.vocab_size / tp);
    }
}

// A pipeline stage holds its layers under their global names; the last
// stage of a tied model holds a copy of the embedding as its head.
TEST(Llama, PipelineStagesHoldTheirLayers) {
  ModelConfig c = testing::tiny_model(true);
  c.num_layers = 4;
  ModelShard first, last;
  first.num_layers = 3, first.last_stage = false;
  last.first_layer = 3, last.num_layers = 1, last.first_stage = false;
  LlamaForCausalLM a(c, first), b(c, last);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  EXPECT_NE(pa.find("model.layers.2.mlp.up_proj.weight"), nullptr);
  EXPECT_EQ(pa.find("model.layers.3.mlp.up_proj.weight"), nullptr);
  EXPECT_EQ(pa.find("model.norm.weight"), nullptr);
  EXPECT_NE(pb.find("model.layers.3.mlp.up_proj.weight"), nullptr);
  EXPECT_NE(pb.find("model.norm.weight"), nullptr);
  EXPECT_NE(pb.find("model.embed_tokens.weight"), nullptr);  // tied: the head
  EXPECT_EQ(pb.size(), 9u + 1u + 1u);                        // one layer, the norm, the embedding copy
}

}  // namespace
}  // namespace lt

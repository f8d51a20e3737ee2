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
  AttentionMask mask{true, docs, docs, {}, {}};
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
  config.attention = "blockwise";
  check_model(config, true);
}

TEST(Llama, HuggingFaceParameterNames) {
  LlamaForCausalLM model(testing::tiny_model());
  auto params = model->named_parameters();
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.1.mlp.down_proj.weight", "model.layers.1.post_attention_layernorm.weight",
                           "model.norm.weight", "lm_head.weight"})
    EXPECT_NE(params.find(name), nullptr) << name;
}

TEST(Llama, InitializationIsDeterministic) {
  LlamaForCausalLM a(testing::tiny_model()), b(testing::tiny_model());
  a->initialize(5);
  b->initialize(5);
  for (const auto& item : a->named_parameters())
    EXPECT_TRUE(item.value().equal(b->named_parameters()[item.key()])) << item.key();
}

}  // namespace
}  // namespace lt

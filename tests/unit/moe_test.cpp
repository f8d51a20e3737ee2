// Mixture of experts on one rank: the router's capacity drops exactly the
// expected selections; a layer's output and every gradient (balance and z
// losses included) equal a naive computation from the formulas; the
// balance scopes score a uniform router at balance_coef; recomputation and
// accumulation leave the loss and gradients unchanged; a run logs routing.
#include <gtest/gtest.h>

#include <cmath>

#include "core/model/moe.h"
#include "train/trainer.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::relative_error;

MoeConfig capacity_config(const std::string& policy) {
  MoeConfig c;
  c.experts = 2, c.top_k = 1, c.capacity_factor = 1.0, c.drop_policy = parse_choice<DropPolicy>(policy);
  return c;
}

// Four tokens, each choosing expert 0 (with growing confidence) except
// token 2: a capacity of ceil(1.0 * 4 * 1 / 2) = 2 per expert.
TEST(Moe, CapacityDropsTheExpectedSelections) {
  const auto logits = at::tensor({1.0f, 0.0f, 2.0f, 0.0f, 0.0f, 1.0f, 3.0f, 0.0f}).view({4, 2});
  auto kept = [&](const std::string& policy) {
    const auto r = route(logits, capacity_config(policy));
    return std::vector<bool>{r.kept[0][0].item<bool>(), r.kept[1][0].item<bool>(), r.kept[2][0].item<bool>(),
                             r.kept[3][0].item<bool>()};
  };
  // Expert 0 is chosen by tokens 0, 1, 3: by probability 3 and 1 stay; by position 0 and 1.
  EXPECT_EQ(kept("probability"), (std::vector<bool>{false, true, true, true}));
  EXPECT_EQ(kept("position"), (std::vector<bool>{true, true, true, false}));
  MoeConfig dropless = capacity_config("probability");
  dropless.capacity_factor = 0;
  EXPECT_TRUE(route(logits, dropless).kept.all().item<bool>());
}

ModelConfig moe_model(const std::string& balance) {
  ModelConfig m = testing::tiny_model();
  m.moe.experts = 4;
  m.moe.top_k = 2;
  m.moe.expert_intermediate_size = 32;
  m.moe.shared_expert_intermediate_size = 16;
  m.moe.normalize_top_k = false;
  m.moe.balance = parse_choice<BalanceScope>(balance);
  m.moe.balance_coef = 0.1;
  m.moe.z_loss_coef = 0.01;
  return m;
}

at::Tensor swiglu(LlamaMLPImpl& m, const at::Tensor& x) {
  return at::linear(at::silu(at::linear(x, m.gate_proj->weight)) * at::linear(x, m.up_proj->weight),
                    m.down_proj->weight);
}

// Expert e of the stacked experts, as a plain SwiGLU.
at::Tensor swiglu(ExpertsImpl& m, int64_t e, const at::Tensor& x) {
  const auto halves = m.gate_up_proj[e].chunk(2, 0);
  return at::linear(at::silu(at::linear(x, halves[0])) * at::linear(x, halves[1]), m.down_proj[e]);
}

// The layer from the formulas: per token, the top-k experts' outputs times
// their probabilities (those within capacity, with a capacity factor), plus
// the gated shared expert; the balance loss coef * E * sum_e f_e P_e (f
// constant) and the z-loss over the layer's tokens. The experts run as
// grouped products, the formulas expert by expert.
TEST(Moe, LayerAndEveryGradientEqualTheFormulas) {
  for (const double capacity : {0.0, 0.6})
    for (const std::string balance : {"micro_batch", "global_batch", "sequence"}) {
      SCOPED_TRACE("capacity factor " + std::to_string(capacity));
      ModelConfig c = moe_model(balance);
      c.moe.capacity_factor = capacity;
      auto balance_state = std::make_shared<MoeBalance>(c);
      ModelShard shard;
      shard.moe = balance_state;
      SparseMoe layer(c, shard, 0);
      at::manual_seed(3);
      for (auto& p : layer->parameters()) p.data().normal_(0, 0.3);
      const int64_t rows = 2, seq = 5, h = c.hidden_size, E = 4;
      const auto x = at::randn({rows, seq, h}).requires_grad_(true);
      balance_state->begin_step(rows * seq, rows, 1);
      (layer(x) * at::linspace(-1, 1, h)).sum().backward();
      const auto stats = balance_state->end_step();

      std::map<std::string, at::Tensor> got;
      for (auto& item : layer->named_parameters()) {
        got[item.key()] = item.value().grad().clone();
        item.value().mutable_grad() = at::Tensor();
      }
      const auto got_x = x.grad().clone();
      x.mutable_grad() = at::Tensor();

      const auto flat = x.view({-1, h});
      const auto logits = at::linear(flat, layer->gate->weight);
      const auto probs = at::softmax(logits, -1);
      const auto chosen = std::get<1>(probs.topk(2, -1));
      const auto kept = route(logits, c.moe).kept;
      EXPECT_EQ(kept.all().item<bool>(), capacity == 0);  // the regime: some selections dropped, or none
      std::vector<at::Tensor> outs;
      for (int64_t t = 0; t < rows * seq; ++t) {
        auto y = at::sigmoid(at::linear(flat[t], layer->shared_expert_gate->weight)) *
                 swiglu(*layer->shared_expert, flat[t]);
        for (int64_t j = 0; j < 2; ++j) {
          const int64_t e = chosen[t][j].item<int64_t>();
          if (!kept[t][j].item<bool>()) continue;
          y = y + probs[t][e] * swiglu(*layer->experts, e, flat[t]);
        }
        outs.push_back(y);
      }
      auto one_hot = at::zeros({rows * seq, E}).scatter_(1, chosen, 1.0);
      at::Tensor f, aux;
      if (balance == "sequence") {
        f = one_hot.view({rows, seq, E}).sum(1);
        f = f / f.sum(-1, true);
        aux = (f * probs.view({rows, seq, E}).mean(1)).sum(-1).mean() * 0.1 * E;
      } else {
        f = one_hot.sum(0) / one_hot.sum();
        aux = (f * probs.mean(0)).sum() * 0.1 * E;
      }
      const auto z = at::logsumexp(logits, -1).pow(2).mean() * 0.01;
      ((at::stack(outs) * at::linspace(-1, 1, h)).sum() + aux + z).backward();
      EXPECT_NEAR(stats.balance_loss, aux.item<double>(), 1e-6) << balance;
      EXPECT_NEAR(stats.z_loss, z.item<double>(), 1e-6) << balance;
      EXPECT_LT(relative_error(got_x, x.grad()), 1e-5) << balance;
      for (auto& item : layer->named_parameters())
        EXPECT_LT(relative_error(got[item.key()], item.value().grad()), 1e-5) << balance << " " << item.key();
    }
}

// A router that sends every token everywhere alike scores balance_coef.
TEST(Moe, UniformRouterScoresTheCoefficient) {
  for (const std::string balance : {"micro_batch", "global_batch", "sequence"}) {
    ModelConfig c = moe_model(balance);
    c.moe.top_k = 4;  // every expert chosen by every token: f = P = 1/E
    c.moe.shared_expert_intermediate_size = 0;
    auto state = std::make_shared<MoeBalance>(c);
    ModelShard shard;
    shard.moe = state;
    SparseMoe layer(c, shard, 0);
    at::NoGradGuard no_grad;
    layer->gate->weight.zero_();
    state->begin_step(8, 2, 1);
    layer(at::randn({2, 4, c.hidden_size}));
    EXPECT_NEAR(state->end_step().balance_loss, 0.1, 1e-6) << balance;
  }
}

Config moe_run(const std::string& dir, const std::string& balance) {
  Config c = testing::tiny_run(dir, 3);
  c.model.moe = moe_model(balance).moe;
  c.model.moe.every = 2;
  return c;
}

// Recomputed layers reuse their forward's routing (no second count), and
// the global-batch balance over four micro-batches equals one micro-batch
// of the whole batch (every forward runs before the first backward).
TEST(Moe, RecomputationAndAccumulationChangeNothing) {
  for (const std::string balance : {"micro_batch", "global_batch", "sequence"}) {
    Config whole = moe_run("", balance);
    whole.train.micro_batch_size = balance == "micro_batch" ? 1 : 4;
    const Batch batch = testing::first_batch(whole, 5);
    Trainer reference(whole);
    const double expected = reference.compute_gradients(batch, 1);
    const auto want = reference.moe_stats();
    auto variants = std::vector<Config>{whole, whole};
    variants[0].memory.checkpoint = Recompute::full;
    variants[1].train.micro_batch_size = 1;
    for (const auto& c : variants) {
      Trainer trainer(c);
      EXPECT_NEAR(trainer.compute_gradients(batch, 1), expected, 1e-6 * expected) << balance;
      EXPECT_NEAR(trainer.moe_stats().balance_loss, want.balance_loss, 1e-6 * want.balance_loss) << balance;
      EXPECT_NEAR(trainer.moe_stats().z_loss, want.z_loss, 1e-6 * want.z_loss) << balance;
      auto reference_params = reference.model().named_parameters();
      for (const auto& item : trainer.model().named_parameters())
        EXPECT_LT(relative_error(item.value().grad(), reference_params[item.key()].grad()), 1e-5)
            << balance << " " << item.key() << " checkpoint " << name(c.memory.checkpoint);
    }
  }
}

// The balance scope matters: the same batch scores differently per micro-batch.
TEST(Moe, MicroBatchBalanceDiffersFromGlobalBatch) {
  Config global = moe_run("", "global_batch"), micro = moe_run("", "micro_batch");
  global.train.micro_batch_size = micro.train.micro_batch_size = 1;
  const Batch batch = testing::first_batch(global, 5);
  Trainer a(global), b(micro);
  a.compute_gradients(batch, 1);
  b.compute_gradients(batch, 1);
  // Per micro-batch the counts are more lopsided: its loss is higher.
  EXPECT_GT(b.moe_stats().balance_loss, a.moe_stats().balance_loss * (1 + 1e-4));
}

TEST(Moe, TrainingLogsTheRouting) {
  const std::string dir = testing::scratch_dir("moe_test", "train");
  Config c = moe_run(dir, "global_batch");
  c.model.moe.capacity_factor = 1.0;
  c.log.interval = 1;
  const auto losses = Trainer(c).run().losses;
  ASSERT_EQ(losses.size(), 3u);
  for (const auto& [step, loss] : losses) EXPECT_TRUE(std::isfinite(loss));
  std::ifstream log(dir + "/train.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("| aux "), std::string::npos) << text;
  EXPECT_NE(text.find(" cv "), std::string::npos);
  EXPECT_NE(text.find("| dropped "), std::string::npos);
}

}  // namespace
}  // namespace lt

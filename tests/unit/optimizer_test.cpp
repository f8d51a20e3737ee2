// AdamW against torch::optim::AdamW, and the learning-rate schedules' values.
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <cmath>

#include "core/optim/adamw.h"
#include "core/optim/lr_schedule.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

TEST(AdamW, MatchesTorchAdamW) {
  at::manual_seed(1);
  auto weight = at::randn({5, 7}), norm = at::randn({7});
  auto ours_w = weight.clone().requires_grad_(), ours_n = norm.clone().requires_grad_();
  auto ref_w = weight.clone().requires_grad_(), ref_n = norm.clone().requires_grad_();
  AdamWOptions options{0.9, 0.95, 1e-8, 0.1};
  AdamW ours(std::vector<NamedParameter>{{"layer.weight", ours_w}, {"layer.norm.weight", ours_n}}, options);
  // torch applies weight decay per group: the norm goes in a group without it.
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{ref_w},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(std::vector<at::Tensor>{ref_n},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW reference(groups, torch::optim::AdamWOptions(1e-2));
  for (int step = 0; step < 5; ++step) {
    const double lr = 1e-2 * (step + 1) / 5.0;
    for (auto& group : reference.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    auto g1 = at::randn({5, 7}), g2 = at::randn({7});
    ours_w.mutable_grad() = g1.clone();
    ours_n.mutable_grad() = g2.clone();
    ref_w.mutable_grad() = g1.clone();
    ref_n.mutable_grad() = g2.clone();
    ours.step(lr);
    reference.step();
  }
  EXPECT_LT(testing::relative_error(ours_w, ref_w), 1e-6);
  EXPECT_LT(testing::relative_error(ours_n, ref_n), 1e-6);
}

// ZeRO-1 updates slices of parameters: two halves must give the whole update.
TEST(AdamW, SegmentsUpdateLikeWholeParameters) {
  at::manual_seed(2);
  auto whole_w = at::randn({6, 5}).requires_grad_(), split_w = whole_w.detach().clone().requires_grad_();
  AdamW one(std::vector<NamedParameter>{{"w.weight", whole_w}}, {});
  AdamW halves({{"w.weight", split_w, 0, 13, {6, 5}, {}, {}}, {"w.weight", split_w, 13, 30, {6, 5}, {}, {}}}, {});
  for (int step = 0; step < 3; ++step) {
    auto g = at::randn({6, 5});
    whole_w.mutable_grad() = g.clone();
    split_w.mutable_grad() = g.clone();
    one.step(1e-2);
    halves.step(1e-2);
  }
  EXPECT_TRUE(whole_w.equal(split_w));
  const auto state = halves.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_TRUE(at::cat({state[0].exp_avg, state[1].exp_avg}).equal(one.state()[0].exp_avg));
}

TEST(AdamW, NoDecayOnNormsAndBiases) {
  EXPECT_TRUE(takes_weight_decay("model.layers.0.mlp.up_proj.weight", 2));
  EXPECT_TRUE(takes_weight_decay("model.embed_tokens.weight", 2));
  EXPECT_FALSE(takes_weight_decay("model.layers.0.input_layernorm.weight", 1));
  EXPECT_FALSE(takes_weight_decay("model.norm.weight", 1));
  EXPECT_FALSE(takes_weight_decay("model.layers.0.self_attn.q_proj.bias", 1));
}

TrainConfig schedule(const std::string& kind) {
  TrainConfig t;
  t.steps = 101;
  t.warmup_steps = 10;
  t.lr = 1.0;
  t.min_lr = 0.1;
  t.schedule = parse_choice<Schedule>(kind);
  t.decay_fraction = 0.2;
  return t;
}

TEST(LrSchedule, WarmupIsLinear) {
  auto t = schedule("cosine");
  EXPECT_DOUBLE_EQ(learning_rate(t, 0), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(t, 4), 0.5);
  EXPECT_DOUBLE_EQ(learning_rate(t, 9), 1.0);
}

TEST(LrSchedule, Values) {
  // After warmup, progress = (step - 10) / (100 - 10).
  EXPECT_DOUBLE_EQ(learning_rate(schedule("constant"), 70), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(schedule("linear"), 10), 1.0);
  EXPECT_NEAR(learning_rate(schedule("linear"), 55), 0.55, 1e-12);
  EXPECT_NEAR(learning_rate(schedule("linear"), 100), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(schedule("cosine"), 55), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(schedule("cosine"), 40), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI / 3)), 1e-12);
  EXPECT_NEAR(learning_rate(schedule("cosine"), 100), 0.1, 1e-12);
  // wsd: stable until round(101 * 0.8) = 81, then linear to min_lr at step 100.
  EXPECT_DOUBLE_EQ(learning_rate(schedule("wsd"), 80), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(schedule("wsd"), 81), 1.0);
  EXPECT_NEAR(learning_rate(schedule("wsd"), 90), 1.0 - 0.9 * 9.0 / 19.0, 1e-12);
  EXPECT_NEAR(learning_rate(schedule("wsd"), 100), 0.1, 1e-12);
}

}  // namespace
}  // namespace lt

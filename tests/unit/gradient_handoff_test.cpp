// The gradient hand-off: when it says backward has left a layer (or the
// head), every gradient of that scope is final, whatever runs inside it:
// tiles of the MLP and of the loss, recomputation, bf16 casts of the
// weights; and it says so once per forward, with `final` only when no
// other forward of the scope awaits its backward.
#include <gtest/gtest.h>

#include "core/model/loss.h"
#include "offload/activations/memory_policy.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

TEST(GradientHandoff, ScopeNames) {
  EXPECT_EQ(GradientHandoff::scope_of("model.layers.12.mlp.up_proj.weight"), 12);
  EXPECT_EQ(GradientHandoff::scope_of("model.norm.weight"), GradientHandoff::kHead);
  EXPECT_EQ(GradientHandoff::scope_of("lm_head.weight"), GradientHandoff::kHead);
  EXPECT_EQ(GradientHandoff::scope_of("model.embed_tokens.weight"), GradientHandoff::kUnscoped);
}

TEST(GradientHandoff, GradientsAreFinalWhenBackwardLeavesTheirScope) {
  for (const std::string precision : {"fp32", "bf16"})
    for (const std::string checkpoint : {"none", "full"})
      for (const std::string tiles : {"1", "2"}) {
        SCOPED_TRACE(precision + ", checkpoint " + checkpoint + ", tiles " + tiles);
        Config c = testing::tiny_run("", 1);
        c.model.num_layers = 3;
        c.memory.checkpoint = parse_choice<Recompute>(checkpoint);
        c.memory.mlp_tiles = c.memory.loss_tiles = tiles;
        const Batch batch = testing::first_batch(c, 3);
        LlamaForCausalLM model(c.model, testing::precision_shard(precision));
        model->initialize(1);
        apply_memory_policy(*model, c.memory);
        auto& handoff = *model->shard().handoff;
        std::map<int64_t, std::map<std::string, at::Tensor>> at_leave;  // scope -> its gradients when left
        std::map<int64_t, int> finals;
        auto listening = GradientHandoff::listen(model->shard().handoff, [&](int64_t scope, bool final) {
          finals[scope] += final;
          for (const auto& item : model->named_parameters())
            if (GradientHandoff::scope_of(item.key()) == scope)
              at_leave[scope][item.key()] = item.value().grad().clone();
        });
        // Two forwards, then their backwards: only the second leaves for good.
        auto first = loss_sum(*model, batch.rows(0, 2)), second = loss_sum(*model, batch.rows(2, 2));
        EXPECT_EQ(handoff.open(0), 2);
        first.backward();
        EXPECT_EQ(handoff.open(0), 1);
        for (const auto& [scope, n] : finals) EXPECT_EQ(n, 0) << "scope " << scope;
        at_leave.clear();
        second.backward();
        listening = {};
        EXPECT_EQ(at_leave.size(), 4u) << "three layers and the head";
        for (const auto& [scope, grads] : at_leave) {
          EXPECT_EQ(finals[scope], 1) << "scope " << scope;
          for (const auto& [name, grad] : grads) {
            const auto now = model->named_parameters()[name].grad();
            ASSERT_TRUE(grad.defined()) << name;
            EXPECT_TRUE(grad.equal(now)) << name << " changed after its scope was left";
          }
        }
      }
}

}  // namespace
}  // namespace lt

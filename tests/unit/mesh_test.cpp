// The rank grid as arithmetic: coordinates and groups of several layouts
// against rank lists worked out by hand, the layout errors, and the plan.
#include <gtest/gtest.h>

#include "core/config/config.h"
#include "core/model/llama.h"
#include "core/util/error.h"
#include "parallel/mesh/layout.h"
#include "train/plan.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using Ranks = std::vector<int>;

// 16 ranks as tp 2 x ulysses 2 x dp 2 x pp 2 (ring 1):
// rank = tp + 2 * (ulysses + 2 * (dp + 2 * pp)).
TEST(Layout, SixteenRanksTwoByTwoByTwoByTwo) {
  const Layout layout({2, 2, 1, 2, 2, 1});
  EXPECT_EQ(layout.world(), 16);
  const Coord c = layout.coord(13);  // 13 = 1 + 2 * (0 + 2 * (1 + 2 * 1))
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.ulysses, 0);
  EXPECT_EQ(c.dp, 1);
  EXPECT_EQ(c.pp, 1);
  EXPECT_EQ(layout.rank(c), 13);
  EXPECT_EQ(layout.group(Group::tp, 13), (Ranks{12, 13}));
  EXPECT_EQ(layout.group(Group::ulysses, 13), (Ranks{13, 15}));
  EXPECT_EQ(layout.group(Group::sp, 13), (Ranks{13, 15}));
  EXPECT_EQ(layout.group(Group::dp, 13), (Ranks{9, 13}));
  EXPECT_EQ(layout.group(Group::pp, 13), (Ranks{5, 13}));
  EXPECT_EQ(layout.group(Group::dp_sp, 13), (Ranks{9, 11, 13, 15}));
  EXPECT_EQ(layout.group(Group::world, 13).size(), 16u);
  EXPECT_EQ(layout.next(Group::pp, 5), 13);
  EXPECT_EQ(layout.previous(Group::pp, 5), 13);
  EXPECT_EQ(layout.group(Group::tp, 0), (Ranks{0, 1}));
  EXPECT_EQ(layout.group(Group::dp_sp, 0), (Ranks{0, 2, 4, 6}));
  // The groups tensor and pipeline parallelism reduce over.
  EXPECT_EQ(layout.group(Group::stage, 13), (Ranks{8, 9, 10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(layout.group(Group::model, 13), (Ranks{4, 5, 12, 13}));
  EXPECT_EQ(layout.group(Group::tied, 13), (Ranks{1, 3, 5, 7, 9, 11, 13, 15}));  // both ends, tp rank 1
}

// Tied embeddings live on the first and last stage only: a middle stage's
// tied group is its own replicas.
TEST(Layout, TiedGroupSpansThePipelineEnds) {
  const Layout layout({1, 1, 1, 2, 3, 1});  // dp 2 x pp 3
  EXPECT_EQ(layout.group(Group::tied, 0), (Ranks{0, 1, 4, 5}));
  EXPECT_EQ(layout.group(Group::tied, 2), (Ranks{2, 3}));
}

// Hybrid sequence parallelism: tp 1, ulysses 2 (inner), ring 2 (outer), dp 2.
TEST(Layout, HybridSequenceParallelism) {
  const Layout layout({1, 2, 2, 2, 1, 1});
  EXPECT_EQ(layout.group(Group::ulysses, 5), (Ranks{4, 5}));
  EXPECT_EQ(layout.group(Group::ring, 5), (Ranks{5, 7}));
  EXPECT_EQ(layout.group(Group::sp, 5), (Ranks{4, 5, 6, 7}));
  EXPECT_EQ(layout.group(Group::dp, 5), (Ranks{1, 5}));
  EXPECT_EQ(layout.group(Group::dp_sp, 5), (Ranks{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(layout.next(Group::ring, 5), 7);
  EXPECT_EQ(layout.next(Group::ring, 7), 5);
}

// A four-rank ring (ring 4 x dp 2): neighbours wrap around.
TEST(Layout, RingNeighbours) {
  const Layout layout({1, 1, 4, 2, 1, 1});
  EXPECT_EQ(layout.group(Group::ring, 6), (Ranks{4, 5, 6, 7}));
  EXPECT_EQ(layout.next(Group::ring, 7), 4);
  EXPECT_EQ(layout.previous(Group::ring, 4), 7);
  EXPECT_EQ(layout.group(Group::dp, 6), (Ranks{2, 6}));
}

// Expert parallelism carved from dp x sp: tp 2 x dp 4 with ep 2.
TEST(Layout, ExpertGroupsFromReplicas) {
  const Layout layout({2, 1, 1, 4, 1, 2});
  EXPECT_EQ(layout.group(Group::dp_sp, 0), (Ranks{0, 2, 4, 6}));
  EXPECT_EQ(layout.group(Group::ep, 0), (Ranks{0, 2}));
  EXPECT_EQ(layout.group(Group::ep, 4), (Ranks{4, 6}));
  EXPECT_EQ(layout.group(Group::ep, 5), (Ranks{5, 7}));
  EXPECT_EQ(layout.group(Group::ep_dp, 0), (Ranks{0, 4}));
  EXPECT_EQ(layout.group(Group::ep_dp, 3), (Ranks{3, 7}));
}

// Eight 64-token sequences a step.
Config small_config() {
  Config c;
  c.model = testing::tiny_model();
  c.data.seq_len = 64;
  c.train.global_batch_tokens = 8 * 64;
  return c;
}

void expect_layout_error(const Config& c, int world, const std::string& fragment) {
  try {
    resolve_degrees(c, world);
    FAIL() << "no error for world " << world;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Layout, ResolvesAutoDpAndRejectsWorldsThatDoNotFit) {
  Config c = small_config();
  c.parallel.tp = 4;
  expect_layout_error(c, 6, "6 ranks cannot be split into replicas of tp=4 x sp.ulysses=1 x sp.ring=1 x pp=1 = 4");
  EXPECT_EQ(resolve_degrees(c, 8).dp, 2);
  c.parallel.dp = std::to_string(3);  // (not = "3": GCC 12 warns falsely of an overflow)
  expect_layout_error(c, 8, "set parallel.dp=2 (or auto)");
  c.parallel.dp = "auto";
  c.parallel.tp = 1;
  c.parallel.ep = 3;
  expect_layout_error(c, 4, "parallel.ep=3 does not divide the dp x sp = 4 ranks");
  c.parallel.ep = 1;
  expect_layout_error(c, 16, "a step of 8 sequences of 64 tokens does not split over dp=16");
}

TEST(Plan, PrintsGridStagesAndMemory) {
  Config c = small_config();
  c.model.num_layers = 3;
  c.parallel.tp = 2;
  c.parallel.pp = 2;
  c.source_file = "test.yaml";
  const std::string plan = describe_plan(c, 8, 4);
  EXPECT_NE(plan.find("on 8 ranks (4 per node, 2 nodes)"), std::string::npos) << plan;
  EXPECT_NE(plan.find("tp 2 x ulysses 1 x ring 1 x dp 2 x pp 2"), std::string::npos) << plan;
  // Rank 7: node 1, tp 1, ulysses 0, ring 0, dp 1, pp 1, ep 0.
  EXPECT_NE(plan.find("\n7      1      1    0         0      1    1    0\n"), std::string::npos) << plan;
  const auto stages = plan_stages(c, resolve_degrees(c, 8));
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[0].layers, 2);  // the extra layer goes first: the last stage holds the head
  EXPECT_EQ(stages[1].first_layer, 2);
  // Stage 0: embedding slice + 2 layers, of one tp rank (kv heads 2 over tp 2: one each).
  const auto& m = c.model;
  const int64_t h = m.hidden_size, d = m.resolved_head_dim();
  const int64_t layer = h * 4 * d / 2 + 2 * h * 1 * d + 4 * d * h / 2 + 3 * h * m.intermediate_size / 2 + 2 * h;
  EXPECT_EQ(stages[0].parameters, m.vocab_size * h / 2 + 2 * layer);
  EXPECT_EQ(stages[1].parameters, layer + h + m.vocab_size * h / 2);
  EXPECT_EQ(stages[0].optimizer, 8 * stages[0].parameters);  // zero 0: both fp32 moments in full
  c.parallel.zero = 1;
  EXPECT_EQ(plan_stages(c, resolve_degrees(c, 8))[0].optimizer, 8 * stages[0].parameters / 2);  // over dp 2
  // ZeRO-2 also shards the fp32 gradients, ZeRO-3 the fp32 masters, whose
  // copies are gathered for the embedding and the running layer and the
  // next one (recomputed layers; kept ones: all of them).
  c.parallel.zero = 2;
  const auto zero2 = plan_stages(c, resolve_degrees(c, 8))[0];
  EXPECT_EQ(zero2.gradients, 4 * (stages[0].parameters / 2));
  EXPECT_EQ(zero2.weights, stages[0].weights);
  c.parallel.zero = 3;
  c.memory.checkpoint = Recompute::full;
  const int64_t embedding = m.vocab_size * h / 2;
  EXPECT_EQ(plan_stages(c, resolve_degrees(c, 8))[0].weights,
            4 * (stages[0].parameters / 2) + 4 * (embedding + 2 * layer));
  c.train.precision = Precision::bf16;  // the layers gathered in bf16, the embedding table in fp32
  EXPECT_EQ(plan_stages(c, resolve_degrees(c, 8))[0].weights,
            4 * (stages[0].parameters / 2) + 4 * embedding + 2 * (2 * layer));
}

// Each memory feature lowers the activation estimate; together they leave
// each layer's input, one layer's recomputation and one tile of logits.
TEST(Plan, MemoryFeaturesLowerTheActivationEstimate) {
  Config c = small_config();
  c.data.seq_len = 1024;
  c.train.global_batch_tokens = 1024;
  const Degrees d = resolve_degrees(c, 1);
  auto estimate = [&](const MemoryConfig& m) {
    c.memory = m;
    return plan_stages(c, d)[0].activations;
  };
  const int64_t none = estimate({});
  for (const MemoryConfig& m :
       {MemoryConfig{Recompute::none, 1, "1", "auto"}, MemoryConfig{Recompute::mlp, 1, "1", "1"},
        MemoryConfig{Recompute::attention, 1, "1", "1"}, MemoryConfig{Recompute::none, 1, "auto", "1"}})
    EXPECT_LT(estimate(m), none) << name(m.checkpoint) << " mlp tiles " << m.mlp_tiles << " loss tiles "
                                 << m.loss_tiles;
  const int64_t every_second = estimate({Recompute::full, 2, "auto", "auto"}),
                all = estimate({Recompute::full, 1, "auto", "auto"});
  EXPECT_LT(all, every_second);
  EXPECT_LT(3 * all, none);  // a tiny model: the ratio grows with hidden size and vocabulary
}

// Model-state offload: the device holds the resident chunks' weights and
// gradients only, the layers' optimizer state moves to the host.
TEST(Plan, ModelStateOffloadLeavesTheResidentChunks) {
  Config c = small_config();
  c.model.num_layers = 8;
  const Degrees d = resolve_degrees(c, 1);
  const auto plain = plan_stages(c, d)[0];
  c.memory.checkpoint = Recompute::full;
  c.memory.offload_model = true;
  c.memory.chunk_mb = 1e-6;  // one layer a chunk
  c.memory.n_persist = 1;
  c.memory.n_buffer = 2;
  const auto offloaded = plan_stages(c, d)[0];
  const auto& m = c.model;
  const int64_t others = 2 * m.vocab_size * m.hidden_size + m.hidden_size;  // embedding, head, final norm
  const int64_t layer = (plain.parameters - others) / 8;
  EXPECT_EQ(offloaded.gradients, (others + 3 * layer) * 4);  // 1 persistent + 2 buffers of one layer
  EXPECT_EQ(offloaded.optimizer, others * 8);
  // fp32 weights, gradients and two moments, and the copies of the values
  // and moments that undo an overlapped update when clipping scales it.
  EXPECT_EQ(offloaded.host, 8 * layer * (16 + 12));
  EXPECT_EQ(plain.host, 0);
  c.memory.overlap_update = false;
  EXPECT_EQ(plan_stages(c, d)[0].host, 8 * layer * 16);
}

// A mixture of experts holds every expert: the plan counts the model's parameters.
TEST(Plan, CountsEveryExpert) {
  Config c = small_config();
  c.model.num_layers = 4;
  c.model.moe.experts = 8;
  c.model.moe.every = 2;
  c.model.moe.expert_intermediate_size = 48;
  c.model.moe.shared_expert_intermediate_size = 24;
  int64_t numel = 0;
  for (const auto& p : LlamaForCausalLM(c.model)->parameters()) numel += p.numel();
  EXPECT_EQ(plan_stages(c, resolve_degrees(c, 1))[0].parameters, numel);
}

// With ep, a rank holds 1/ep of the experts, and ZeRO-1 shards their
// moments over the ep_dp ranks holding the same experts (dp x sp / ep),
// the other parameters' over dp x sp.
TEST(Plan, ShardsExpertMomentsOverTheirReplicas) {
  Config c = small_config();
  c.model.num_layers = 2;
  c.model.moe.experts = 8;
  c.model.moe.every = 2;
  c.model.moe.expert_intermediate_size = 48;
  c.parallel.ep = 4;
  c.parallel.zero = 1;
  const auto& m = c.model;
  const int64_t expert = 3 * m.hidden_size * 48, held = 2 * expert;  // 8 experts over ep 4
  const auto dense = [&] {
    Config d = c;
    d.model.moe.experts = 0;
    d.parallel.ep = 1;
    return plan_stages(d, resolve_degrees(d, 8))[0].parameters;
  }();
  const int64_t others = dense - 3 * m.hidden_size * m.intermediate_size + m.hidden_size * 8;  // the router
  const auto stage = plan_stages(c, resolve_degrees(c, 8))[0];
  EXPECT_EQ(stage.parameters, others + held);
  EXPECT_EQ(stage.optimizer, 8 * (others / 8 + held / 2));  // dp 8, ep_dp 2
}

TEST(Plan, ShowsTheSequenceSplitAndItsVolume) {
  Config c = small_config();
  c.data.seq_len = 62;  // padded to 64 for ulysses 2 x zigzag ring 2
  c.train.global_batch_tokens = 62;
  c.parallel.sp.ulysses = 2;
  c.parallel.sp.ring = 2;
  c.source_file = "test.yaml";
  const std::string plan = describe_plan(c, 4, 4);
  EXPECT_NE(plan.find("sequence: ulysses 2 x ring 2 (zigzag): 16 tokens per rank of 64 (padded from 62)"),
            std::string::npos)
      << plan;
}

TEST(Plan, ShowsWhatTheAutoPlanWouldChoose) {
  Config c = small_config();
  c.source_file = "test.yaml";
  c.memory.plan = PlanMode::automatic;
  c.memory.device_budget_gb = 1;
  const std::string roomy = describe_plan(c, 1, 1);
  EXPECT_NE(roomy.find("memory plan (auto, budget 1.0 GiB per rank"), std::string::npos) << roomy;
  std::string all_kept = "stage 0: layers 0-";
  all_kept += std::to_string(c.model.num_layers - 1);
  all_kept += " keep; predicted step";
  EXPECT_NE(roomy.find(all_kept), std::string::npos) << roomy;
  c.memory.device_budget_gb = 1e-6;
  const std::string tight = describe_plan(c, 1, 1);
  EXPECT_NE(tight.find("stage 0: memory.device_budget_gb: no plan fits"), std::string::npos) << tight;
}

}  // namespace
}  // namespace lt

// memory.plan: auto. The planner on constructed profiles (what it chooses
// as the budget moves, that its choice always fits, that an impossible
// budget names the minimum), then on the tiny model: the profiled plan
// trains to the same losses as the plain run, and its predicted activation
// peak is within 10% of the tracked peak of a step.
#include <gtest/gtest.h>

#include "train/trainer.h"
#include "core/util/error.h"
#include "offload/chunks/chunk_manager.h"
#include "offload/profiler/planner.h"
#include "train/plan.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

constexpr int64_t kMiB = 1 << 20;

// Eight equal layers: a kept layer adds 10 MiB, a checkpointed one its 1 MiB
// output; recomputing costs 1 s of a 4 s layer.
Profile eight_layers() {
  Profile p;
  p.base = kMiB;
  for (int64_t l = 0; l < 8; ++l) {
    BlockProfile b;
    b.layer = l;
    b.forward_s = 1, b.recompute_s = 1, b.backward_s = 2;
    b.input = b.output = kMiB;
    b.kept = 10 * kMiB;
    b.start = p.base + (l + 1) * kMiB + kMiB;  // the outputs so far and the incoming gradient
    b.transient = 12 * kMiB;
    p.blocks.push_back(b);
  }
  p.head_peak = p.base + 8 * kMiB + 4 * kMiB;
  p.state = 100 * kMiB;
  p.link_bytes_per_s = 1e9;
  return p;
}

int count(const MemoryPlan& plan, BlockMode mode) {
  int n = 0;
  for (const auto& [layer, m] : plan.modes) n += m == mode;
  return n;
}

TEST(Planner, KeepsMoreLayersAsTheBudgetGrowsAndAlwaysFits) {
  const Profile p = eight_layers();
  int kept_before = -1;
  for (int64_t budget = 130; budget <= 260; budget += 5) {
    const MemoryPlan plan = choose_plan(p, budget * kMiB);
    EXPECT_LE(plan.peak(), 0.95 * budget * kMiB) << budget;
    EXPECT_EQ(count(plan, BlockMode::swap), 0);  // the host is the device here
    EXPECT_GE(count(plan, BlockMode::keep), kept_before) << budget;
    kept_before = count(plan, BlockMode::keep);
    // Keeping a layer saves its recomputation: 1 s each.
    EXPECT_DOUBLE_EQ(plan.step_s, 8 * 3 + (8 - kept_before) * 1.0);
  }
  EXPECT_EQ(choose_plan(p, 130 * kMiB).modes.size(), 8u);
  EXPECT_EQ(count(choose_plan(p, 130 * kMiB), BlockMode::keep), 1);  // the last layer: no backward follows it
  EXPECT_EQ(count(choose_plan(p, 260 * kMiB), BlockMode::keep), 8);
  // The last layers are kept first: backward frees them first.
  const MemoryPlan mixed = choose_plan(p, 160 * kMiB);
  ASSERT_GT(count(mixed, BlockMode::keep), 0);
  EXPECT_EQ(mixed.modes.at(7), BlockMode::keep);
  EXPECT_EQ(mixed.modes.at(0), BlockMode::checkpoint);
}

TEST(Planner, ImpossibleBudgetNamesTheMinimum) {
  try {
    choose_plan(eight_layers(), 50 * kMiB);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("memory.device_budget_gb: no plan fits 50.0 MiB"), std::string::npos) << message;
    EXPECT_NE(message.find("raise the budget to at least"), std::string::npos) << message;
    // The minimum it names is enough.
    const auto at = message.find("at least ") + 9;
    const double mib = std::stod(message.substr(at));
    EXPECT_NO_THROW(choose_plan(eight_layers(), static_cast<int64_t>((mib + 0.1) * kMiB)));
  }
}

// Where host memory is separate (CUDA), a swapped layer frees its input on
// the device; with a fast link the copies hide behind compute and cost nothing.
TEST(Planner, SwapsWhereTheHostIsSeparateAndTheLinkKeepsUp) {
  Profile p = eight_layers();
  p.swap_frees_device = true;
  p.overlap_swaps = true;
  const MemoryPlan lean = choose_plan(p, 122 * kMiB);
  EXPECT_GE(count(lean, BlockMode::swap), 7);
  EXPECT_LE(lean.peak(), 0.95 * 122 * kMiB);
  EXPECT_THROW(choose_plan(eight_layers(), 122 * kMiB), Error);  // without swapping it does not fit
  // A slow link makes swapping cost time: with room, checkpoint instead.
  p.link_bytes_per_s = 1e5;
  const MemoryPlan roomy = choose_plan(p, 150 * kMiB);
  EXPECT_EQ(count(roomy, BlockMode::swap), 0);
}

// Chunks: each persistent chunk saves its copies (3 x 8 MiB at 8 MiB/s = 3 s
// a step); the budget decides how many stay.
TEST(Planner, PersistsChunksAsTheBudgetAllows) {
  Profile p = eight_layers();
  p.chunks = std::vector<int64_t>(4, 8 * kMiB);
  for (int64_t l = 0; l < 8; ++l) p.chunk_of_block.push_back(l / 2);
  p.link_bytes_per_s = 8.0 * kMiB;
  const MemoryPlan lean = choose_plan(p, 160 * kMiB);
  EXPECT_EQ(count(lean, BlockMode::keep), 0);  // a chunked layer is never kept
  const MemoryPlan roomy = choose_plan(p, 250 * kMiB);
  EXPECT_EQ(roomy.n_persist, 4);
  EXPECT_EQ(roomy.n_buffer, 0);
  EXPECT_DOUBLE_EQ(roomy.step_s, 8 * 4.0);
  EXPECT_LT(lean.n_persist, roomy.n_persist);
  EXPECT_DOUBLE_EQ(lean.step_s, 8 * 4.0 + (4 - lean.n_persist) * 3.0);
  EXPECT_LE(lean.peak(), 0.95 * 160 * kMiB);
  EXPECT_EQ(lean.chunks, ChunkManager::required_bytes(p.chunks, lean.n_persist, lean.n_buffer));
}

// Where chunk copies run beside compute, a second buffer hides them (3 s of
// copies behind 8 s of a chunk's layers): cheaper than persistent chunks.
TEST(Planner, SecondBufferHidesOverlappedChunkCopies) {
  Profile p = eight_layers();
  p.chunks = std::vector<int64_t>(4, 8 * kMiB);
  for (int64_t l = 0; l < 8; ++l) p.chunk_of_block.push_back(l / 2);
  p.link_bytes_per_s = 8.0 * kMiB;
  p.overlap_chunk_copies = true;
  const MemoryPlan plan = choose_plan(p, 175 * kMiB);
  EXPECT_EQ(plan.n_buffer, 2);
  EXPECT_DOUBLE_EQ(plan.step_s, 8 * 4.0);
}

// The chunks' host update, overlapped, costs only what outlasts the last
// backward (8 x 2 s with every layer kept, 8 x 3 s with recomputation).
TEST(Planner, OverlappedHostUpdateHidesBehindBackward) {
  Profile p = eight_layers();
  p.optimizer_s = 1;
  p.host_optimizer_s = 30;
  EXPECT_DOUBLE_EQ(choose_plan(p, 260 * kMiB).step_s, 8 * 3.0 + 1 + 30);
  p.overlap_host_optimizer = true;
  EXPECT_DOUBLE_EQ(choose_plan(p, 260 * kMiB).step_s, 8 * 3.0 + 1 + (30 - 8 * 2.0));
  LayerModes recomputed;
  for (const auto& b : p.blocks) recomputed[b.layer] = BlockMode::checkpoint;
  EXPECT_DOUBLE_EQ(predict(p, recomputed, 0, 0).step_s, 8 * 4.0 + 1 + (30 - 8 * 3.0));
  p.host_optimizer_s = 10;
  EXPECT_DOUBLE_EQ(choose_plan(p, 260 * kMiB).step_s, 8 * 3.0 + 1);
}

// The tiny model at 512 tokens: what keeping everything takes decides a
// budget that forces a mix.
Config planned(const std::string& dir, double budget_gb) {
  Config c = testing::tiny_run(dir, 3);
  c.data.seq_len = 512;
  c.data.passkey.max_doc_len = 512;
  c.train.global_batch_tokens = 4 * 512;
  c.train.micro_batch_size = 4;
  c.model.num_layers = 4;
  c.memory.plan = PlanMode::automatic;
  c.memory.device_budget_gb = budget_gb;
  return c;
}

void expect_prediction_holds(Trainer& trainer) {
  const auto& plan = trainer.memory_plan();
  ASSERT_TRUE(plan.has_value());
  const double measured = static_cast<double>(trainer.last_activation_bytes());
  EXPECT_LT(std::abs(plan->activations - measured), 0.10 * measured)
      << "predicted " << plan->activations << " bytes, tracked " << measured;
}

TEST(Planner, ProfiledPlanPredictsTheTrackedPeakAndTrainsAsThePlainRun) {
  const std::string dir = testing::scratch_dir("planner_test", "tiny");
  Config plain = planned(dir + "/plain", 0);
  plain.memory.plan = PlanMode::manual;
  const auto expected = Trainer(plain).run().losses;

  Trainer roomy(planned(dir + "/roomy", 1.0));
  roomy.run();
  ASSERT_TRUE(roomy.memory_plan().has_value());
  EXPECT_EQ(count(*roomy.memory_plan(), BlockMode::keep), 4);
  expect_prediction_holds(roomy);

  // `longtrain plan`'s estimate, made without running, agrees.
  const MemoryPlan estimated = choose_plan(estimated_profile(planned("", 1.0), Degrees{}, 0), 1 << 30);
  EXPECT_EQ(estimated.modes, roomy.memory_plan()->modes);
  EXPECT_LT(std::abs(estimated.activations - roomy.memory_plan()->activations), 0.1 * estimated.activations);

  // Room for about three quarters of everything kept.
  const double everything = static_cast<double>(roomy.memory_plan()->peak());
  Trainer tight(planned(dir + "/tight", 0.75 * everything / (1 << 30)));
  const auto losses = tight.run().losses;
  const auto& plan = *tight.memory_plan();
  EXPECT_GT(count(plan, BlockMode::checkpoint), 0);
  EXPECT_GT(count(plan, BlockMode::keep), 0);
  EXPECT_LE(plan.peak(), 0.75 * everything);
  expect_prediction_holds(tight);
  for (const auto& [step, loss] : losses) EXPECT_NEAR(loss, expected.at(step), 1e-6 * loss) << "step " << step;
}

// An MoE layer keeps each selection's rows: `longtrain plan`'s estimate
// follows what the profiler measures of a mixture of experts.
TEST(Planner, EstimateCountsTheExpertsActivations) {
  const std::string dir = testing::scratch_dir("planner_test", "moe");
  Config c = planned(dir, 1.0);
  c.model.moe.experts = 4;
  c.model.moe.top_k = 2;
  c.model.moe.every = 2;
  c.model.moe.expert_intermediate_size = 96;
  c.model.moe.shared_expert_intermediate_size = 32;
  c.train.steps = 1;
  Trainer trainer(c);
  trainer.run();
  ASSERT_TRUE(trainer.memory_plan().has_value());
  const MemoryPlan estimated = choose_plan(estimated_profile(c, Degrees{}, 0), 1 << 30);
  const double measured = trainer.memory_plan()->activations;
  EXPECT_LT(std::abs(estimated.activations - measured), 0.1 * measured)
      << "estimated " << estimated.activations << " bytes, profiled " << measured;
}

// With room for the state, the activations and three and a half chunks,
// two chunks stay and one buffer serves the others (on the host a second
// buffer would hide no copy); what the step then tracked fits the budget.
TEST(Planner, ProfiledPlanWithChunksStaysInItsBudget) {
  const std::string dir = testing::scratch_dir("planner_test", "chunks");
  Config plain = planned(dir + "/plain", 0);
  plain.memory.plan = PlanMode::manual;
  const auto expected = Trainer(plain).run().losses;
  Config c = planned(dir + "/roomy", 1.0);
  c.memory.offload_model = true;
  c.memory.chunk_mb = 0.01;  // a chunk per layer
  Trainer roomy(c);
  roomy.run();
  const MemoryPlan all = *roomy.memory_plan();
  EXPECT_EQ(all.n_persist, 4);
  const int64_t chunk = all.chunks / 4;

  c.run_dir = dir + "/tight";
  const double budget = (all.state + all.activations + 3.5 * chunk) / 0.95;
  c.memory.device_budget_gb = budget / (1 << 30);
  Trainer trainer(c);
  const auto losses = trainer.run().losses;
  const auto& plan = *trainer.memory_plan();
  EXPECT_EQ(count(plan, BlockMode::keep), 0);  // a chunked layer is recomputed
  EXPECT_EQ(plan.n_persist, 2);
  EXPECT_EQ(trainer.chunks()->device_bytes(), plan.chunks);
  EXPECT_LE(plan.state + trainer.chunks()->device_bytes() + trainer.last_activation_bytes(), budget);
  expect_prediction_holds(trainer);
  for (const auto& [step, loss] : losses) EXPECT_NEAR(loss, expected.at(step), 1e-6 * loss) << "step " << step;
}

}  // namespace
}  // namespace lt

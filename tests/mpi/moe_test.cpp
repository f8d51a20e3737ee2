// Mixture of experts over dp, sp (Ulysses, ring) and pp against one rank on
// the same global batch, for each balance scope: the loss, the balance and
// z losses, every gradient and the clipping norm, also with the experts
// split over ep ranks. The global-batch balance sums routing counts over
// dp x sp and four accumulated micro-batches per rank, and so equals the
// single rank's balance over the whole batch in one micro-batch.
#include <gtest/gtest.h>

#include "train/trainer.h"
#include "parallel/mesh/mesh.h"
#include "tests/support/layout_evaluation.h"
#include "tests/support/gradient_check.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

struct MoeLayout {
  int pp = 1, ulysses = 1, ring = 1, ep = 1;
  bool recompute = false;
  int zero = 0;
  int ranks() const { return pp * ulysses * ring; }
  std::string describe() const {
    return "pp " + std::to_string(pp) + " x ulysses " + std::to_string(ulysses) + " x ring " + std::to_string(ring) +
           ", ep " + std::to_string(ep) + ", zero " + std::to_string(zero) + (recompute ? ", recomputed" : "");
  }
};

// dp fills the rest of the world; ep is carved from dp x sp.
std::vector<MoeLayout> moe_layouts(int P) {
  if (P == 2)
    return {{},        {.ulysses = 2},          {.ring = 2, .recompute = true}, {.pp = 2},
            {.ep = 2}, {.ulysses = 2, .ep = 2}, {.ep = 2, .zero = 3},           {.ulysses = 2, .ep = 2, .zero = 2}};
  if (P == 4)
    return {{},
            {.ulysses = 2},
            {.pp = 2, .recompute = true},
            {.pp = 2, .ring = 2},
            {.ep = 2},
            {.ep = 4, .recompute = true},
            {.ulysses = 2, .ep = 2, .zero = 1},
            {.pp = 2, .ep = 2},
            {.ep = 2, .recompute = true, .zero = 3},
            {.pp = 2, .ep = 2, .zero = 2}};
  return {};
}

// 4 layers, MoE in 1 and 3 (4 experts, top 2, a shared expert); 4 sequences
// per dp rank, one per micro-batch.
Config moe_config(const MoeLayout& l, int P, const std::string& balance) {
  Config c = testing::tiny_run("", 1);
  c.model.num_layers = 4;
  auto& m = c.model.moe;
  m.experts = 4, m.top_k = 2, m.every = 2;
  m.expert_intermediate_size = 32, m.shared_expert_intermediate_size = 16;
  m.balance = parse_choice<BalanceScope>(balance);
  m.balance_coef = 0.1, m.z_loss_coef = 0.01;
  c.data.document_mask = true;
  c.train.global_batch_tokens = 4 * (P / l.ranks()) * c.data.seq_len;
  c.train.micro_batch_size = 1;
  c.parallel.pp = l.pp;
  c.parallel.sp.ulysses = l.ulysses;
  c.parallel.sp.ring = l.ring;
  c.parallel.ep = l.ep;
  c.parallel.zero = l.zero;
  c.parallel.emulate_nccl = true;  // every layout in NCCL's order
  c.parallel.bucket_mb = 0.01;
  if (l.recompute) c.memory.checkpoint = Recompute::full;
  return c;
}

// Every balance scope in fp32; in bf16 (the router in fp32, the rows
// travelling to their experts in bf16) with global-batch balance, on the
// layouts whose attention runs the one rank's kernel. (Ring attention's
// blockwise kernel rounds differently from the flash kernel of one rank; in
// bf16 that moves a few tokens' top-2 choice to another expert, and such a
// discrete change moves that expert's gradient by a few percent: cosine
// 0.97-0.999 here, with the loss still within 5e-3.)
TEST(MoeJob, LossBalanceAndEveryGradientEqualOneRank) {
  const int P = testing::world_size();
  const std::vector<std::pair<std::string, std::string>> runs = {
      {"micro_batch", "fp32"}, {"global_batch", "fp32"}, {"sequence", "fp32"}, {"global_batch", "bf16"}};
  for (const auto& l : moe_layouts(P)) {
    for (const auto& [balance, precision] : runs) {
      if (precision == "bf16" && l.ring > 1) continue;
      SCOPED_TRACE(l.describe() + ", balance " + balance + ", " + precision);
      Config config = moe_config(l, P, balance);
      config.train.precision = parse_choice<Precision>(precision);
      const auto agreement = testing::agreement(precision);
      const double near = precision == "bf16" ? agreement.loss : 1e-5;
      const Batch batch = testing::first_batch(config, 13);
      Mesh mesh(Layout(resolve_degrees(config, P)), MPI_COMM_WORLD, 120, device_transport(config));
      ASSERT_EQ(mesh.group(Group::ep).transport(), DeviceTransport::emulated_nccl);
      Trainer parallel(config, &mesh);
      Config alone = config;
      alone.parallel = ParallelConfig{};
      alone.memory = MemoryConfig{};
      // Global-batch balance: the single rank takes the whole batch at once.
      if (balance == "global_batch") alone.train.micro_batch_size = config.sequences_per_step(0);
      Trainer serial(alone);
      const double loss = parallel.compute_gradients(batch, 1);
      const double expected = serial.compute_gradients(batch, 1);
      EXPECT_TRUE(testing::losses_agree(loss, expected, agreement));
      // The clipping norm over every expert, whichever rank holds it.
      const double norm = Trainer(config, &mesh).step(batch, 1, 1e-3).grad_norm;
      const double expected_norm = Trainer(alone).step(batch, 1, 1e-3).grad_norm;
      EXPECT_NEAR(norm, expected_norm, near * expected_norm);
      const auto &got = parallel.moe_stats(), &want = serial.moe_stats();
      EXPECT_NEAR(got.balance_loss, want.balance_loss, near * want.balance_loss);
      EXPECT_NEAR(got.z_loss, want.z_loss, near * want.z_loss);
      EXPECT_NEAR(got.load_cv, want.load_cv, precision == "bf16" ? 5e-2 : 1e-5);
      testing::expect_gradients_agree(parallel, serial, agreement);
    }
  }
}

// Evaluation on the job's own layout; with the experts split, the dp
// replicas run their forwards in lockstep (5 sequences over 2 or 4).
TEST(MoeJob, EvaluatesOnItsOwnLayout) {
  const int P = testing::world_size();
  for (const auto& l : moe_layouts(P)) {
    SCOPED_TRACE(l.describe());
    testing::expect_layout_evaluation_equals_one_rank(moe_config(l, P, "global_batch"));
  }
}

// Two optimizer steps with the experts split over ep ranks: the single
// rank's losses, and one process resumes the job's checkpoint (each expert
// written by the ranks holding it) and continues as the job did.
TEST(MoeJob, ExpertParallelTrainingAndResumeEqualOneRank) {
  const int P = testing::world_size();
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  Communicator world(comm, "test", 120);
  const std::string dir = testing::shared_scratch_dir(world, "moe_test", "ep");
  for (int zero : {0, 1, 3}) {
    SCOPED_TRACE("zero " + std::to_string(zero));
    Config config = moe_config({.ep = P, .zero = zero}, P, "global_batch");
    config.train.steps = 3;
    config.checkpoint.interval = 2;
    config.run_dir = dir + "/job" + std::to_string(zero);
    Mesh mesh(Layout(resolve_degrees(config, P)), MPI_COMM_WORLD, 120, device_transport(config));
    const auto losses = Trainer(config, &mesh).run().losses;
    Config alone = config;
    alone.parallel = ParallelConfig{};
    alone.run_dir = dir + "/alone" + std::to_string(zero) + "_" + std::to_string(world.rank());
    const auto expected = Trainer(alone).run().losses;
    ASSERT_EQ(losses.size(), 3u);
    for (const auto& [step, loss] : losses) EXPECT_NEAR(loss, expected.at(step), 1e-5 * loss) << "step " << step;
    alone.run_dir += "_resumed";
    alone.checkpoint.resume = config.run_dir + "/checkpoints/step_00000002";
    const auto resumed = Trainer(alone).run().losses;
    ASSERT_EQ(resumed.size(), 1u);
    EXPECT_NEAR(resumed.at(3), losses.at(3), 1e-5 * losses.at(3));
  }
}

}  // namespace
}  // namespace lt

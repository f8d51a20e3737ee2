// Data parallelism against one process on the same global batch: gradients
// after the bucketed (overlapped, sharded) reduction, then whole training
// runs (losses and parameters after 3 steps), with ZeRO 0 and 1, also with
// the layers' state offloaded in chunks, and resume of a sharded checkpoint
// on the same and on another dp degree.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "train/evaluate.h"
#include "core/model/loss.h"
#include "train/trainer.h"
#include "train/plan.h"
#include "offload/activations/memory_policy.h"
#include "parallel/data_parallel/parameter_state.h"
#include "parallel/mesh/mesh.h"
#include "tests/support/gradient_check.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

struct DataParallelJob : ::testing::TestWithParam<int> {  // the ZeRO stage
  DataParallelJob() {
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    world = std::make_unique<Communicator>(comm, "test", 120);
    P = world->size(), r = world->rank();
  }

  // tiny_run with 2 sequences per rank a step, micro-batches of one (so
  // gradients accumulate), and small buckets (so there are several).
  Config run(const std::string& dir, int64_t steps, int dp) {
    Config c = testing::tiny_run(dir, steps);
    c.train.global_batch_tokens = 2 * P * c.data.seq_len;
    c.train.micro_batch_size = 1;
    c.parallel.dp = std::to_string(dp);
    c.parallel.zero = GetParam();
    c.parallel.emulate_nccl = GetParam() == 3;  // ZeRO-3's gathers and reductions in NCCL's order
    c.parallel.bucket_mb = 0.01;
    return c;
  }

  std::map<int64_t, double> train(const Config& c) {
    Mesh mesh(Layout(resolve_degrees(c, P)), MPI_COMM_WORLD, 120, device_transport(c));
    EXPECT_EQ(mesh.group(Group::dp_sp).transport() == DeviceTransport::emulated_nccl, c.parallel.emulate_nccl);
    return Trainer(c, &mesh).run().losses;
  }

  std::unique_ptr<Communicator> world;
  int P = 1, r = 0;
};

void expect_close(const std::map<int64_t, double>& a, const std::map<int64_t, double>& b, double tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [step, loss] : a) EXPECT_NEAR(loss, b.at(step), tolerance * std::abs(b.at(step))) << "step " << step;
}

// Two checkpoints' weights, each read whole whatever layout wrote it (ZeRO-3:
// a file of shards per rank).
void expect_same_weights(const ModelConfig& model, const std::string& a, const std::string& b) {
  LlamaForCausalLM x(model), y(model);
  load_checkpoint(a, *x, nullptr, nullptr);
  load_checkpoint(b, *y, nullptr, nullptr);
  auto want = y->named_parameters();
  for (const auto& item : x->named_parameters())
    EXPECT_LT(testing::relative_error(item.value(), want[item.key()]), 1e-5) << item.key();
}

// Each ZeRO level's reduction of two accumulated micro-batches (ZeRO-2/3
// reduce each backward; ZeRO-3 gathers the layers as they run, kept for
// backward or recomputed) against one process's full-batch gradients.
TEST_P(DataParallelJob, ReducedGradientsEqualTheFullBatchGradients) {
  const auto zero = static_cast<ZeroLevel>(GetParam());
  for (bool overlap : {true, false})
    for (const std::string checkpoint : {"none", "full"}) {
      if (checkpoint == "full" && zero != ZeroLevel::weights) continue;
      SCOPED_TRACE("overlap " + std::to_string(overlap) + ", checkpoint " + checkpoint);
      Config c = run("", 1, P);
      c.memory.checkpoint = parse_choice<Recompute>(checkpoint);
      auto source = make_document_source(c.data, c.model.vocab_size, 7, Split::Train);
      Packer packer(*source, c.data);
      const Batch batch = packer.next(2 * P, c.data.seq_len);
      const double valid = static_cast<double>(batch.valid_tokens());

      LlamaForCausalLM serial(c.model), parallel(c.model);
      serial->initialize(1);
      parallel->initialize(1);
      (loss_sum(*serial, batch) / valid).backward();

      std::vector<NamedParameter> params;
      for (auto& item : parallel->named_parameters()) params.push_back({item.key(), item.value()});
      StateOptions options;
      options.bucket_bytes = 10000, options.overlap = overlap, options.zero = zero;
      ParameterState state(params, *world, options, parallel->shard().handoff);
      apply_memory_policy(*parallel, c.memory, [&state](int64_t layer) { state.use(layer); });
      EXPECT_GT(state.bucket_count(), 2);
      state.zero_grad();
      state.gather_for_step();
      for (int row = 0; row < 2; ++row) {
        state.begin_backward(row == 1);
        (loss_sum(*parallel, batch.rows(2 * r + row, 1)) / valid).backward();
        state.end_backward();
      }
      state.finish();
      auto reference = serial->named_parameters();
      for (const auto& s : state.segments()) {
        auto expected = reference[s.name].grad().reshape(-1).narrow(0, s.start, s.size());
        EXPECT_LT(testing::relative_error(s.grad(), expected), 1e-5) << s.name;
      }
      double norm = 0;
      for (const auto& item : reference) norm += item.value().grad().pow(2).sum().item<double>();
      EXPECT_NEAR(std::sqrt(state.grad_square_sum()), std::sqrt(norm), 1e-5 * std::sqrt(norm));
      EXPECT_EQ(state.peak_gathered_bytes() > 0, zero == ZeroLevel::weights);
    }
}

// Also with the layers' checkpointing chosen by the memory planner, whose
// profiled step runs the level's gathers and reductions.
TEST_P(DataParallelJob, TrainingEqualsOneProcess) {
  const std::string dir = testing::shared_scratch_dir(*world, "dp_test", "equal_zero" + std::to_string(GetParam()));
  // The reference: each rank trains the same global batch alone.
  Config alone = run(dir + "/alone" + std::to_string(r), 3, 1);
  alone.parallel.zero = 0;
  const auto serial = Trainer(alone).run().losses;
  for (const std::string plan : {"manual", "auto"}) {
    SCOPED_TRACE("memory.plan " + plan);
    Config c = run(dir + "/" + plan, 3, P);
    c.memory.plan = parse_choice<PlanMode>(plan);
    c.memory.device_budget_gb = plan == "auto" ? 1 : 0;
    expect_close(train(c), serial, 1e-5);
    expect_same_weights(alone.model, c.run_dir + "/checkpoints/step_00000003",
                        alone.run_dir + "/checkpoints/step_00000003");
  }
}

// The model state a rank holds (the replica sets' flat buffers, ZeRO-3's
// gathered weights at their peak in a step, AdamW's moments) is what
// `longtrain plan` predicts, within 5%; between steps ZeRO-3 holds 1/P of
// the 16 bytes per parameter one rank holds.
TEST_P(DataParallelJob, ModelStateBytesMatchThePlan) {
  Config c = run("", 1, P);
  c.memory.checkpoint = Recompute::full;
  Mesh mesh(Layout(resolve_degrees(c, P)), MPI_COMM_WORLD, 120, device_transport(c));
  Trainer trainer(c, &mesh);
  trainer.compute_gradients(testing::first_batch(c, 5), 1);
  int64_t held = 0, gathered = 0, parameters = 0;
  for (const auto& s : trainer.states()) held += s->buffer_bytes(), gathered += s->peak_gathered_bytes();
  for (const auto& s : trainer.optimizer().state()) held += s.exp_avg.nbytes() + s.exp_avg_sq.nbytes();
  for (const auto& p : LlamaForCausalLM(c.model)->parameters()) parameters += p.numel();
  const auto stage = plan_stages(c, resolve_degrees(c, P))[0];
  const double planned = static_cast<double>(stage.weights + stage.gradients + stage.optimizer);
  EXPECT_NEAR(static_cast<double>(held + gathered), planned, 0.05 * planned)
      << "held " << held << ", gathered at the peak " << gathered;
  if (GetParam() == 3) {
    EXPECT_GT(gathered, 0);
    EXPECT_NEAR(static_cast<double>(held * P), 16.0 * parameters, 0.01 * 16 * parameters);
  }
}

// The layers' state in host chunks (their gradients all-reduced, or with
// ZeRO-1 reduce-scattered and each rank's update gathered), set by hand and
// by the memory planner (whose stage-wide mean profile must lead every rank
// to the same plan): one process's losses and weights; one process resumes
// the job's sharded checkpoint.
TEST_P(DataParallelJob, OffloadedChunksEqualOneProcess) {
  const std::string dir = testing::shared_scratch_dir(*world, "dp_test", "chunks_zero" + std::to_string(GetParam()));
  Config alone = run(dir + "/alone" + std::to_string(r), 3, 1);
  alone.parallel.zero = 0;
  const auto serial = Trainer(alone).run().losses;
  for (const std::string plan : {"manual", "auto"}) {
    Config c = run(dir + "/" + plan, 3, P);
    c.memory.offload_model = true;
    c.memory.checkpoint = Recompute::full;
    c.memory.chunk_mb = 0.01;  // a chunk per layer
    c.memory.n_persist = 1;
    c.memory.plan = parse_choice<PlanMode>(plan);
    c.memory.device_budget_gb = plan == "auto" ? 1 : 0;
    c.checkpoint.interval = 2;
    const auto losses = train(c);
    expect_close(losses, serial, 1e-5);
    expect_same_weights(alone.model, c.run_dir + "/checkpoints/step_00000003",
                        alone.run_dir + "/checkpoints/step_00000003");
    Config resumed = alone;
    resumed.run_dir += "_resumed_" + plan;
    resumed.checkpoint.resume = c.run_dir + "/checkpoints/step_00000002";
    expect_close(Trainer(resumed).run().losses, {{3, losses.at(3)}}, 1e-5);
  }
}

// With ZeRO-1 each rank's optimizer holds its 1/P of every chunk (up to the
// padding that makes the chunks split evenly); with ZeRO-2/3 its host holds
// only that 1/P of the chunks' fp32 values and gradients too.
TEST_P(DataParallelJob, ShardedChunksSplitTheHostState) {
  Config c = run("", 1, P);
  c.train.precision = Precision::fp32;
  c.memory.offload_model = true;
  c.memory.checkpoint = Recompute::full;
  c.memory.chunk_mb = 0.01;
  Mesh mesh(Layout(resolve_degrees(c, P)), MPI_COMM_WORLD, 120, device_transport(c));
  Trainer trainer(c, &mesh);
  const auto& chunks = *trainer.chunks();
  int64_t mine = 0, all = 0;
  for (const auto& s : chunks.segments()) mine += s.size();
  for (int64_t bytes : chunks.chunk_bytes()) all += bytes / 4;  // fp32 device copies
  const double optimizer_parts = GetParam() >= 1 ? P : 1, host_parts = GetParam() >= 2 ? P : 1;
  const double padding = static_cast<double>(chunks.chunk_count() * P);  // elements at most
  EXPECT_NEAR(static_cast<double>(mine), all / optimizer_parts, padding);
  EXPECT_NEAR(static_cast<double>(chunks.host_bytes()), 2 * 4 * all / host_parts, 2 * 4 * padding);
}

TEST_P(DataParallelJob, ResumesOnTheSameAndOnAnotherDpDegree) {
  const std::string dir = testing::shared_scratch_dir(*world, "dp_test", "resume_zero" + std::to_string(GetParam()));
  Config straight = run(dir + "/straight", 4, P);
  straight.checkpoint.interval = 2;
  const auto uninterrupted = train(straight);

  // The same layout, from the step-2 checkpoint: bit-exact.
  Config again = run(dir + "/again", 4, P);
  again.checkpoint.resume = dir + "/straight/checkpoints/step_00000002";
  const auto resumed = train(again);
  ASSERT_EQ(resumed.size(), 2u);
  for (const auto& [step, loss] : resumed) EXPECT_EQ(loss, uninterrupted.at(step)) << "step " << step;

  // Another ZeRO level on the same ranks (0 <-> 3, 1 <-> 2) reshards it.
  Config other = run(dir + "/other", 4, P);
  other.parallel.zero = 3 - GetParam();
  other.checkpoint.resume = again.checkpoint.resume;
  expect_close(train(other), {{3, uninterrupted.at(3)}, {4, uninterrupted.at(4)}}, 1e-5);

  // One process picks up the job's checkpoint: its optimizer state is
  // gathered from every shard.
  Config alone = run(dir + "/alone" + std::to_string(r), 4, 1);
  alone.checkpoint.resume = again.checkpoint.resume;
  const auto continued = Trainer(alone).run().losses;
  ASSERT_EQ(continued.size(), 2u);
  for (const auto& [step, loss] : continued) EXPECT_NEAR(loss, uninterrupted.at(step), 1e-5 * loss) << "step " << step;
}

// bf16 compute against one rank in bf16 on the same global batch: the
// loss and gradients of a step,
// reduced in fp32 and in bf16 (parallel.reduce_dtype), with the layers in
// replicated buckets and in offloaded chunks; then three steps' losses.
TEST_P(DataParallelJob, Bf16EqualsOneRankInBf16) {
  const std::string dir = testing::shared_scratch_dir(*world, "dp_test", "bf16_zero" + std::to_string(GetParam()));
  const auto agreement = testing::agreement("bf16");
  for (const bool chunks : {false, true})
    for (const std::string reduce : {"fp32", "bf16"}) {
      SCOPED_TRACE(std::string(chunks ? "offloaded chunks" : "buckets") + ", reduced in " + reduce);
      Config c = run(dir + "/dp_" + reduce + (chunks ? "_chunks" : ""), 3, P);
      c.train.precision = Precision::bf16;
      c.parallel.reduce_dtype = parse_choice<WireDtype>(reduce);
      if (chunks) c.memory.offload_model = true, c.memory.checkpoint = Recompute::full, c.memory.chunk_mb = 0.01;
      Config alone = run(dir + "/alone" + std::to_string(r) + reduce + (chunks ? "_chunks" : ""), 3, 1);
      alone.train.precision = Precision::bf16;
      alone.parallel.zero = 0;
      const Batch batch = testing::first_batch(c, 21);
      Mesh mesh(Layout(resolve_degrees(c, P)), MPI_COMM_WORLD, 120, device_transport(c));
      Trainer parallel(c, &mesh), serial(alone);
      EXPECT_TRUE(
          testing::losses_agree(parallel.compute_gradients(batch, 1), serial.compute_gradients(batch, 1), agreement));
      // (The chunks' host gradients: the steps' losses cover them.)
      if (!chunks) testing::expect_gradients_agree(parallel, serial, agreement);
      const auto losses = train(c);
      const auto expected = Trainer(alone).run().losses;
      for (const auto& [step, loss] : losses)
        EXPECT_TRUE(testing::losses_agree(loss, expected.at(step), agreement)) << step;
    }
}

INSTANTIATE_TEST_SUITE_P(Zero, DataParallelJob, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "zero" + std::to_string(info.param); });

// Evaluation shared over the ranks, each a share of the batches, gives what
// one rank alone gives.
TEST(SharedEvaluation, EqualsOneRankAlone) {
  Config c = testing::tiny_run("unused", 1);
  c.train.micro_batch_size = 2;
  c.eval.sequences = 5, c.eval.passkey_samples = 7, c.eval.passkey_depths = 2;
  LlamaForCausalLM model(c.model);
  model->initialize(3);
  const at::Device cpu(at::kCPU);
  const auto score = whole_model_scorer(*model, cpu);
  const EvalReport alone = evaluate(score, c);
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  Communicator world(comm, "test", 120);
  const EvalReport shared =
      evaluate(score, c, {world.rank(), world.size(), [&](at::Tensor& t) { world.all_reduce(t); }});
  ASSERT_TRUE(shared.loss && alone.loss);
  EXPECT_EQ(shared.loss->tokens, alone.loss->tokens);
  EXPECT_NEAR(shared.loss->loss, alone.loss->loss, 1e-12);
  for (size_t b = 0; b < alone.loss->by_position.size(); ++b) {
    const double a = alone.loss->by_position[b], d = shared.loss->by_position[b];
    EXPECT_TRUE(std::isnan(a) ? std::isnan(d) : std::abs(a - d) < 1e-12)
        << b << ": " << a << " alone, " << d << " shared";
  }
  ASSERT_EQ(shared.passkey.size(), alone.passkey.size());
  for (size_t i = 0; i < alone.passkey.size(); ++i) {
    EXPECT_EQ(shared.passkey[i].samples, alone.passkey[i].samples);
    EXPECT_EQ(shared.passkey[i].exact_match, alone.passkey[i].exact_match);
    EXPECT_EQ(shared.passkey[i].digit_accuracy, alone.passkey[i].digit_accuracy);
    EXPECT_EQ(shared.passkey[i].exact_by_depth, alone.passkey[i].exact_by_depth);
  }
}

}  // namespace
}  // namespace lt

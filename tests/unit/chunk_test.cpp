// Chunked model state (memory.offload_model) against the plain run: the loss
// and every gradient, and whole training runs; chunks come to the device in
// execution order (the next one prefetched), never more than the budget
// holds; an impossible budget is refused with the minimum that would work;
// under bf16 the device copies are bf16 and equal the plain bf16 run.
#include <gtest/gtest.h>

#include "train/trainer.h"
#include "core/util/error.h"
#include "offload/activations/tiling.h"
#include "offload/chunks/chunk_manager.h"
#include "train/equivalence_check.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::relative_error;

// 4 layers, each its own chunk (the chunk size is below a layer's bytes).
Config chunk_config(const std::string& dir) {
  Config c = testing::tiny_run(dir, 3);
  c.model.num_layers = 4;
  c.memory.checkpoint = Recompute::full;
  return c;
}

Config offloaded(Config c, int64_t persist, int64_t buffers) {
  c.memory.offload_model = true;
  c.memory.chunk_mb = 0.01;
  c.memory.n_persist = persist;
  c.memory.n_buffer = buffers;
  c.run_dir += "_chunked";
  return c;
}

TEST(Chunks, SameLossAndEveryGradient) {
  const Config plain = chunk_config("");
  const Batch batch = testing::first_batch(plain, 8);
  Trainer reference(plain);
  const double expected = reference.compute_gradients(batch, 1);
  for (int64_t persist : {0, 1}) {
    Trainer trainer(offloaded(plain, persist, 2));
    EXPECT_NEAR(trainer.compute_gradients(batch, 1), expected, 1e-6 * expected);
    auto want = reference.model().named_parameters();
    int64_t layers = 0;
    for (const auto& p : trainer.chunks()->host_parameters()) {  // the layers': on the host
      EXPECT_LT(relative_error(p.tensor.grad(), want[p.name].grad()), 1e-6) << p.name;
      ++layers;
    }
    EXPECT_EQ(layers, 4 * 9);
    for (const auto& item : trainer.model().named_parameters()) {
      if (item.key().find("layers") != std::string::npos) continue;
      EXPECT_LT(relative_error(item.value().grad(), want[item.key()].grad()), 1e-6) << item.key();
    }
  }
}

// The reproduction on one rank: a chunk of several layers never
// handed its gradients to the host (the host update applied weight decay
// alone), and a tiled MLP's weights handed theirs over once per tile.
// Whole runs of 4 steps give the plain run's losses.
TEST(Chunks, SeveralLayersAChunkTrainAsThePlainRun) {
  Config plain = chunk_config(testing::scratch_dir("Chunks", "plain"));
  plain.train.steps = 4;
  const auto expected = Trainer(plain).run().losses;
  struct Case {
    double layers;  // a chunk's bound, in layers
    const char* mlp_tiles;
    bool overlap_update;
    int64_t chunks;
  };
  for (const Case& k : {Case{2.5, "1", true, 2}, Case{2.5, "2", false, 2}, Case{4.5, "2", true, 1}}) {
    Config c = plain;
    c.run_dir = testing::scratch_dir("Chunks", "several_" + std::to_string(k.chunks) + k.mlp_tiles);
    c.memory.offload_model = true;
    c.memory.chunk_mb = chunk_mb_holding(c, k.layers);
    c.memory.mlp_tiles = k.mlp_tiles;
    c.memory.overlap_update = k.overlap_update;
    SCOPED_TRACE("chunks " + std::to_string(k.chunks) + ", mlp_tiles " + k.mlp_tiles);
    Trainer trainer(c);
    const auto losses = trainer.run().losses;
    EXPECT_EQ(trainer.chunks()->chunk_count(), k.chunks);
    EXPECT_EQ(trainer.chunks()->chunk_of(0), trainer.chunks()->chunk_of(1)) << "the first chunk holds two layers";
    EXPECT_EQ(tile_count(c.memory.mlp_tiles, c.data.seq_len, c.model.hidden_size), std::stoll(k.mlp_tiles));
    ASSERT_EQ(losses.size(), expected.size());
    for (const auto& [step, loss] : expected) EXPECT_NEAR(losses.at(step), loss, 1e-5 * loss) << "step " << step;
  }
}

TEST(Chunks, ManagerFetchesInExecutionOrderWithinItsBudget) {
  Config c = offloaded(chunk_config(""), 0, 2);
  c.train.micro_batch_size = 4;  // one micro-batch: one forward, one backward
  Trainer trainer(c);
  // Forward 0 1 2 3 (each prefetching the next), backward 3 2 1 0 (each
  // prefetching the one before): 2 and 3 are still resident after forward.
  trainer.compute_gradients(testing::first_batch(c, 8), 1);
  auto* chunks = trainer.chunks();
  ASSERT_NE(chunks, nullptr);
  EXPECT_EQ(chunks->chunk_count(), 4);
  EXPECT_EQ(chunks->fetches(), (std::vector<int64_t>{0, 1, 2, 3, 1, 0}));
  // Device memory: two buffers, each one layer's values and gradients.
  int64_t layer_bytes = 0;
  for (const auto& item : trainer.model().named_parameters())
    if (item.key().rfind("model.layers.0.", 0) == 0) layer_bytes += item.value().numel() * 4;
  EXPECT_EQ(chunks->device_bytes(), 2 * 2 * layer_bytes);
}

TEST(Chunks, ImpossibleBudgetNamesTheMinimum) {
  Config c = offloaded(chunk_config(""), 2, 2);
  c.memory.device_budget_gb = 1e-6;  // about 1 KiB
  try {
    Trainer trainer(c);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("memory.device_budget_gb: the chunked model state needs"), std::string::npos) << message;
    EXPECT_NE(message.find("raise the budget to at least"), std::string::npos) << message;
  }
}

// Three optimizer steps with the state on the host: the plain run's losses
// (the host AdamW is the same update), and a resumed run continues exactly;
// in fp32 and in bf16 (whose checkpoints hold the host's fp32 masters, not
// the device's bf16 copies).
TEST(Chunks, TrainingAndResumeEqualThePlainRun) {
  for (const std::string precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    Config plain = chunk_config(testing::scratch_dir("chunk_test", "train_" + precision) + "/plain");
    plain.train.precision = parse_choice<Precision>(precision);
    const auto expected = Trainer(plain).run().losses;
    Config chunked = offloaded(plain, 1, 2);
    chunked.checkpoint.interval = 2;
    const auto losses = Trainer(chunked).run().losses;
    for (const auto& [step, loss] : losses) EXPECT_NEAR(loss, expected.at(step), 1e-6 * loss) << "step " << step;
    Config again = chunked;
    again.run_dir += "_again";
    again.checkpoint.resume = chunked.run_dir + "/checkpoints/step_00000002";
    const auto resumed = Trainer(again).run().losses;
    ASSERT_EQ(resumed.size(), 1u);
    EXPECT_EQ(resumed.at(3), losses.at(3));
  }
}

// The host AdamW of each chunk runs during backward, as soon as backward is
// done with the chunk; clipping is exact although the norm is known only
// afterwards (clipped steps redo the update). With clipping off, never
// triggered and on every step: the plain run's losses and weights, and the
// same as the update after backward.
TEST(Chunks, UpdateOverlappedWithBackwardEqualsThePlainRun) {
  const std::string dir = testing::scratch_dir("chunk_test", "overlap");
  for (double clip : {0.0, 1e3, 1e-3}) {
    Config plain = chunk_config(dir + "/plain" + std::to_string(clip));
    plain.train.grad_clip = clip;
    Trainer reference(plain);
    const auto expected = reference.run().losses;
    auto want = reference.model().named_parameters();
    for (bool overlap : {true, false}) {
      Config chunked = offloaded(plain, 1, 2);
      chunked.memory.overlap_update = overlap;
      chunked.run_dir += overlap ? "_overlap" : "_after";
      Trainer trainer(chunked);
      const auto losses = trainer.run().losses;
      for (const auto& [step, loss] : losses)
        EXPECT_NEAR(loss, expected.at(step), 1e-6 * loss) << "clip " << clip << " step " << step;
      for (const auto& p : trainer.chunks()->host_parameters())
        EXPECT_LT(relative_error(p.tensor, want[p.name]), 1e-6) << "clip " << clip << " " << p.name;
    }
  }
}

// Under bf16 the device holds bf16 copies and gradients (half the bytes);
// the fp32 masters, their gradients and the moments stay on the host. The
// plain bf16 run's loss and every gradient: the same roundings, each weight
// cast once and each gradient added into its fp32 master once per backward.
TEST(Chunks, Bf16DeviceCopiesEqualThePlainBf16Run) {
  Config plain = chunk_config("");
  plain.train.precision = Precision::bf16;
  const Batch batch = testing::first_batch(plain, 8);
  Trainer reference(plain);
  const double expected = reference.compute_gradients(batch, 1);
  auto want = reference.model().named_parameters();
  Trainer trainer(offloaded(plain, 1, 2));
  EXPECT_NEAR(trainer.compute_gradients(batch, 1), expected, 1e-6 * expected);
  int64_t layer_numel = 0;
  for (const auto& p : trainer.chunks()->host_parameters()) {
    EXPECT_EQ(p.tensor.grad().scalar_type(), at::kFloat) << p.name;
    EXPECT_LT(relative_error(p.tensor.grad(), want[p.name].grad()), 1e-6) << p.name;
    if (p.name.rfind("model.layers.0.", 0) == 0) layer_numel += p.tensor.numel();
  }
  for (const auto& item : trainer.model().named_parameters())
    if (item.key().rfind("model.layers.0.", 0) == 0) {  // the persistent chunk, on the device
      EXPECT_EQ(item.value().scalar_type(), at::kBFloat16) << item.key();
    }
  // One persistent chunk and two buffers, each a layer's values and gradients in bf16.
  EXPECT_EQ(trainer.chunks()->device_bytes(), 3 * 2 * layer_numel * 2);
}

// The chunks reach the worker as backward completes them, last layer first.
TEST(Chunks, BackwardHandsEachChunkToTheUpdateAsItCompletes) {
  Config c = offloaded(chunk_config(testing::scratch_dir("chunk_test", "handover")), 1, 2);
  c.train.steps = 1;
  Trainer trainer(c);
  trainer.run();
  ASSERT_NE(trainer.overlapped_update(), nullptr);
  EXPECT_EQ(trainer.overlapped_update()->handed_over(), (std::vector<size_t>{3, 2, 1, 0}));
}

}  // namespace
}  // namespace lt

// The training loop: accumulation gives the full-batch result, and a run on
// Megatron-format data goes end to end.
#include <gtest/gtest.h>

#include <random>

#include "core/train/trainer.h"
#include "tests/support/megatron_writer.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

Config base(const std::string& name) { return testing::tiny_run(testing::scratch_dir("trainer_test", name), 3); }

// Micro-batches of 1, 2 or 4 sequences: the same losses, step after step,
// because every micro-batch is normalised by the whole batch's valid tokens.
TEST(Trainer, AccumulationEqualsFullBatch) {
  std::map<int64_t, double> reference;
  for (int64_t micro : {4, 2, 1}) {
    Config c = base("accumulate" + std::to_string(micro));
    c.train.micro_batch_size = micro;
    auto losses = Trainer(c).run().losses;
    if (reference.empty()) reference = losses;
    for (const auto& [step, loss] : losses)
      EXPECT_NEAR(loss, reference.at(step), 1e-5 * std::abs(reference.at(step))) << "micro " << micro << " step " << step;
  }
}

TEST(Trainer, TrainsAndEvaluatesOnMegatronData) {
  Config c = base("indexed");
  std::mt19937 g(3);
  std::vector<std::vector<std::vector<int64_t>>> docs(40);
  for (auto& doc : docs) {
    doc.resize(1 + g() % 3);
    for (auto& sentence : doc) {
      sentence.resize(5 + g() % 30);
      for (auto& t : sentence) t = g() % c.model.vocab_size;
    }
  }
  testing::write_megatron_dataset(c.run_dir + "/corpus", docs, 8);
  c.data.source = "indexed";
  c.data.path = c.run_dir + "/corpus";
  c.data.eval_fraction = 0.1;
  c.eval.at_end = true;
  c.eval.sequences = 2;
  c.train.steps = 8;  // random tokens: a few steps learn their frequencies
  auto result = Trainer(c).run();
  ASSERT_EQ(result.losses.size(), 8u);
  EXPECT_LT(result.losses.at(8), result.losses.at(1));
  ASSERT_TRUE(result.eval.has_value());
  EXPECT_GT(result.eval->tokens, 0);
  EXPECT_TRUE(std::isfinite(result.eval->loss));
  EXPECT_FALSE(result.passkey.has_value());
}

}  // namespace
}  // namespace lt

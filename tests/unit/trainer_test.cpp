// The training loop: accumulation gives the full-batch result, and a run on
// Megatron-format data goes end to end.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "train/evaluate.h"
#include "train/trainer.h"
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
      EXPECT_NEAR(loss, reference.at(step), 1e-5 * std::abs(reference.at(step)))
          << "micro " << micro << " step " << step;
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
  c.data.source = DataSourceKind::indexed;
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

// eval.interval evaluates between steps, and the end of the run once more:
// each evaluation is a line of eval.jsonl with the loss by position (whose
// token-weighted mean is the loss) and passkey retrieval by length and depth.
TEST(Trainer, EvaluatesAtIntervalsIntoTheRunDirectory) {
  Config c = base("eval_interval");
  c.train.steps = 4;
  c.eval.at_end = true;
  c.eval.interval = 2;
  c.eval.sequences = 4;
  c.eval.passkey_samples = 4;
  c.eval.passkey_lengths = {64, 128};
  c.eval.passkey_depths = 2;
  const auto result = Trainer(c).run();
  std::ifstream in(c.run_dir + "/eval.jsonl");
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].at("step"), 2);
  EXPECT_EQ(records[1].at("step"), 4);
  const auto& last = records[1];
  EXPECT_DOUBLE_EQ(last.at("loss").at("loss").get<double>(), result.eval->loss);
  EXPECT_EQ(last.at("loss").at("by_position").size(), 4u);
  ASSERT_EQ(last.at("passkey").size(), 2u);
  EXPECT_EQ(last.at("passkey")[1].at("length"), 128);
  EXPECT_EQ(last.at("passkey")[1].at("exact_by_depth").size(), 2u);
  EXPECT_EQ(result.passkey->length, 128);
}

// A length curriculum switches at its steps with the tokens per step held,
// and a run resumed in the middle of a stage reproduces the straight run.
TEST(Trainer, CurriculumSwitchesAtItsStepsAndResumesMidStage) {
  auto curriculum = [](const std::string& name) {
    Config c = base(name);
    c.train.steps = 6;
    c.log.interval = 1;
    c.checkpoint.interval = 2;
    c.data.curriculum = {{3, 32}, {5, 16}};  // 32 tokens for steps 1-3, 16 for 4-5, then 64
    return c;
  };
  Config c = curriculum("curriculum");
  for (int64_t s = 0; s < 6; ++s)
    EXPECT_EQ(c.sequences_per_step(s) * c.data.seq_len_at(s), c.train.global_batch_tokens);
  const auto straight = Trainer(c).run().losses;
  std::ifstream log(c.run_dir + "/train.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  for (const char* line : {"step 3/6 | seq 32 ", "step 4/6 | seq 16 ", "step 5/6 | seq 16 ", "step 6/6 | seq 64 "})
    EXPECT_NE(text.find(line), std::string::npos) << line;
  Config resumed = curriculum("curriculum_resumed");
  resumed.checkpoint.resume = c.run_dir + "/checkpoints/step_00000004";  // inside the second stage
  const auto again = Trainer(resumed).run().losses;
  ASSERT_EQ(again.size(), 2u);
  for (const auto& [step, loss] : again) EXPECT_EQ(loss, straight.at(step)) << "step " << step;
}

TEST(Evaluate, LossByPositionAveragesToTheLoss) {
  Config c = base("by_position");
  c.eval.sequences = 4;
  c.eval.position_buckets = 8;
  c.data.reset_position_ids = false;  // positions are the sequence's columns: equal-sized buckets
  LlamaForCausalLM model(c.model);
  model->initialize(3);
  const auto r = evaluate_loss(whole_model_scorer(*model, at::kCPU), c);
  ASSERT_EQ(r.by_position.size(), 8u);
  double sum = 0;
  for (double b : r.by_position) sum += b;
  EXPECT_NEAR(sum / 8, r.loss,
              1e-3 * r.loss);  // each bucket holds the same count of valid labels, up to the ends of documents
}

// A step whose loss is NaN (LT_FAULT=nan@0:2) updates nothing: the weights
// stay as the step before left them, and the next step updates again.
TEST(Trainer, NonFiniteStepIsSkipped) {
  Config c = base("skip");
  Trainer trainer(c);
  const Batch batch = testing::first_batch(c, 1);
  trainer.step(batch, 1, 1e-2);
  auto weights = [&] {
    std::vector<at::Tensor> out;
    for (const auto& p : trainer.model().parameters()) out.push_back(p.detach().clone());
    return out;
  };
  const auto before = weights();
  setenv("LT_FAULT", "nan@0:2", 1);
  const double poisoned = trainer.step(batch, 2, 1e-2).loss;
  unsetenv("LT_FAULT");
  EXPECT_TRUE(std::isnan(poisoned));
  const auto after = weights();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(after[i].equal(before[i])) << "parameter " << i;
  EXPECT_TRUE(std::isfinite(trainer.step(batch, 3, 1e-2).loss));
  EXPECT_FALSE(weights()[0].equal(before[0]));
}

// Documents of at most 90 tokens in sequences of 256, positions restarting:
// the buckets past 90 hold no token, and say so instead of a loss of 0.
TEST(Evaluate, EmptyPositionBucketHasNoLoss) {
  Config c = base("empty_bucket");
  c.data.seq_len = 256;
  c.eval.sequences = 2;
  c.eval.passkey_samples = 0;
  LlamaForCausalLM model(c.model);
  model->initialize(3);
  EvalReport report;
  report.loss = evaluate_loss(whole_model_scorer(*model, at::kCPU), c);
  ASSERT_EQ(report.loss->by_position.size(), 4u);
  EXPECT_FALSE(std::isnan(report.loss->by_position[0]));
  EXPECT_TRUE(std::isnan(report.loss->by_position[3]));
  EXPECT_NE(describe(report, c).find("192-256 -"), std::string::npos) << describe(report, c);
}

}  // namespace
}  // namespace lt

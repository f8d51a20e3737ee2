// Adaptive sequence parallelism (data.packing: adaptive) against one rank:
// the same documents give the same loss and every gradient (1e-5 relative)
// under any plan: every rank alone, one group of all ranks, mixed sizes with
// idle ranks, and the planner's own plan broadcast from rank 0; ZeRO-2 and
// 3 too. Whole runs equal one process, and a resumed run continues exactly.
#include <gtest/gtest.h>

#include <fstream>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "train/trainer.h"
#include "parallel/adaptive/sp_planner.h"
#include "tests/support/gradient_check.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

// Documents of 40 to 128 tokens (lengths no group size divides among them).
Config adaptive_run(const std::string& dir, int64_t steps) {
  Config c = testing::tiny_run(dir, steps);
  c.data.packing = Packing::adaptive;
  c.data.seq_len = 128;
  c.data.passkey.max_doc_len = 128;
  c.train.global_batch_tokens = 6 * 128;
  c.train.schedule = Schedule::constant;
  c.parallel.adaptive.time_limit_s = 0.5;
  // About 100 tokens' activations per rank: the longer documents need pairs.
  c.parallel.adaptive.activation_gb = 6e-4;
  return c;
}

std::vector<int64_t> lengths(const std::vector<Batch>& documents) {
  std::vector<int64_t> out;
  for (const auto& d : documents) out.push_back(d.tokens.size(1));
  return out;
}

// Documents dealt to `groups` in turn.
SpPlan dealt(std::vector<int> groups, int64_t documents) {
  SpPlan plan;
  plan.groups = std::move(groups);
  plan.documents.assign(plan.groups.size(), {});
  for (int64_t d = 0; d < documents; ++d) plan.documents[d % plan.groups.size()].push_back(d);
  plan.method = "uniform";
  return plan;
}

std::map<std::string, at::Tensor> gradients(Trainer& trainer) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : trainer.model().named_parameters()) out[item.key()] = item.value().grad().clone();
  return out;
}

class AdaptiveSpPrecision : public ::testing::TestWithParam<std::string> {};

TEST_P(AdaptiveSpPrecision, StepEqualsOneRankUnderEveryPlan) {
  const int P = testing::world_size();
  Config config = adaptive_run("", 1);
  config.train.precision = parse_choice<Precision>(GetParam());
  const auto agreement = testing::agreement(GetParam());
  auto source = make_document_source(config.data, config.model.vocab_size, 9, Split::Train);
  Packer packer(*source, config.data);
  const auto documents = packer.documents(config.train.global_batch_tokens, config.data.seq_len);
  const auto n = static_cast<int64_t>(documents.size());
  ASSERT_GE(n, 6);

  Trainer alone(config);
  const double expected = alone.compute_gradients(documents, dealt({1}, n), 1);
  const auto expected_grads = gradients(alone);

  Mesh mesh(Layout(resolve_degrees(config, P)), MPI_COMM_WORLD, 60);
  Trainer trainer(config, &mesh);
  ASSERT_EQ(trainer.adaptive()->max_group(), P);  // 4 heads
  std::vector<SpPlan> plans = {dealt(std::vector<int>(P, 1), n), dealt({P}, n), dealt({1}, n)};
  if (P == 4) plans.push_back(dealt({2, 1, 1}, n)), plans.push_back(dealt({2, 1}, n));
  // The planner's own, with a cost model that makes small groups cheap.
  SpCostModel model;
  model.attention_s = 1e-6, model.linear_s = 1e-4, model.exchange_s = 1e-4, model.latency_s = 1e-3;
  model.bytes_per_token = 1, model.memory_limit = 100;  // a document of 128 tokens needs 2 ranks
  model.max_group = P;
  trainer.adaptive()->set_cost_model(model);
  trainer.adaptive()->start_planning(lengths(documents));
  plans.push_back(trainer.adaptive()->finish_planning());
  EXPECT_EQ(check_plan(plans.back(), lengths(documents), P, model), "");

  for (const auto& plan : plans) {
    std::string groups;
    for (int g : plan.groups) groups += std::to_string(g) + " ";
    SCOPED_TRACE("groups " + groups + plan.method);
    EXPECT_TRUE(testing::losses_agree(trainer.compute_gradients(documents, plan, 1), expected, agreement));
    for (const auto& [name, grad] : gradients(trainer))
      EXPECT_TRUE(testing::gradients_agree(grad, expected_grads.at(name), agreement)) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, AdaptiveSpPrecision, ::testing::Values("fp32", "bf16"),
                         [](const auto& info) { return info.param; });

// ZeRO-2 and 3 under adaptive plans: the groups run different numbers of
// documents (ranks outside every group none), so the gradients are
// reduce-scattered once, at the step's end, and ZeRO-3's weights gathered
// once, at its start; each rank's shards equal one rank's gradients.
TEST(AdaptiveSp, ShardedStateEqualsOneRank) {
  const int P = testing::world_size();
  Config config = adaptive_run("", 1);
  auto source = make_document_source(config.data, config.model.vocab_size, 9, Split::Train);
  Packer packer(*source, config.data);
  const auto documents = packer.documents(config.train.global_batch_tokens, config.data.seq_len);
  const auto n = static_cast<int64_t>(documents.size());
  Trainer alone(config);
  const double expected = alone.compute_gradients(documents, dealt({1}, n), 1);
  for (const int zero : {2, 3}) {
    SCOPED_TRACE("zero " + std::to_string(zero));
    config.parallel.zero = zero;
    Mesh mesh(Layout(resolve_degrees(config, P)), MPI_COMM_WORLD, 60);
    Trainer trainer(config, &mesh);
    for (const auto& plan : {dealt(std::vector<int>(P, 1), n), dealt({P}, n), dealt({1}, n)}) {
      EXPECT_TRUE(
          testing::losses_agree(trainer.compute_gradients(documents, plan, 1), expected, testing::agreement("fp32")));
      testing::expect_gradients_agree(trainer, alone, testing::agreement("fp32"));
    }
  }
}

std::map<int64_t, double> train(Config config) { return Trainer(config).run().losses; }

TEST(AdaptiveSp, TrainingEqualsOneProcessAndResumes) {
  const int P = testing::world_size();
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  Communicator world(comm, "test", 60);
  const std::string dir = testing::shared_scratch_dir(world, "adaptive_sp_test", "train");
  Config config = adaptive_run(dir + "/straight", 4);
  Mesh mesh(Layout(resolve_degrees(config, P)), MPI_COMM_WORLD, 60);
  const auto parallel = Trainer(config, &mesh).run().losses;
  Config alone = config;
  alone.run_dir = dir + "/alone" + std::to_string(world.rank());
  alone.parallel.adaptive.activation_gb = 0;  // one rank holds every document
  const auto serial = train(alone);
  ASSERT_EQ(parallel.size(), 4u);
  for (const auto& [step, loss] : parallel) EXPECT_NEAR(loss, serial.at(step), 1e-5 * loss) << "step " << step;
  // ZeRO-3, its cost model profiled on weights gathered for it, the same.
  Config sharded = adaptive_run(dir + "/zero3", 4);
  sharded.parallel.zero = 3;
  for (const auto& [step, loss] : Trainer(sharded, &mesh).run().losses)
    EXPECT_NEAR(loss, serial.at(step), 1e-5 * loss) << "zero 3, step " << step;

  // Every step's plan is logged.
  if (world.rank() == 0) {
    std::ifstream log(config.run_dir + "/adaptive_sp.jsonl");
    int64_t lines = 0;
    for (std::string line; std::getline(log, line); ++lines) {
      const auto record = nlohmann::json::parse(line);
      EXPECT_EQ(record["step"], lines + 1);
      EXPECT_GT(record["measured_s"].get<double>(), 0);
      EXPECT_FALSE(record["groups"].empty());
    }
    EXPECT_EQ(lines, 4);
  }

  // Stopped after step 2 and resumed: steps 3 and 4 as in the straight run
  // (the documents planned ahead are drawn again from the checkpoint's position).
  Config first = adaptive_run(dir + "/resumed", 2);
  Trainer(first, &mesh).run();
  Config rest = adaptive_run(dir + "/resumed", 4);
  rest.checkpoint.resume = "auto";
  const auto resumed = Trainer(rest, &mesh).run().losses;
  ASSERT_EQ(resumed.size(), 2u);
  for (int64_t step : {3, 4}) EXPECT_NEAR(resumed.at(step), parallel.at(step), 1e-6 * parallel.at(step));
}

}  // namespace
}  // namespace lt

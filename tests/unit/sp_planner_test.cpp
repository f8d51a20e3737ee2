// The adaptive sequence-parallel planner: the optimum where brute force
// knows it, never a memory limit broken, and a valid plan from the greedy
// fallback when the solver gets no time.
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "parallel/adaptive/cost_calibration.h"
#include "parallel/adaptive/sp_planner.h"

namespace lt {
namespace {

// Attention dominates long documents; the all-to-all and its latency make
// a group of more than one rank a loss for short ones; 4K tokens per rank.
SpCostModel model() {
  SpCostModel m;
  m.attention_s = 1e-8;
  m.linear_s = 1e-5;
  m.exchange_s = 4e-5;
  m.latency_s = 2e-3;
  m.bytes_per_token = 1;
  m.memory_limit = 4096;
  return m;
}

// Every partition of `ranks` into powers of two and every assignment of the
// documents to its groups: the least step time.
double brute_force(const std::vector<int64_t>& lengths, int ranks, const SpCostModel& m) {
  double best = 1e30;
  std::vector<int> groups;
  std::function<void(int, int)> partitions = [&](int left, int largest) {
    if (!groups.empty()) {
      std::vector<double> load(groups.size(), 0);
      std::function<void(size_t)> assign = [&](size_t d) {
        if (d == lengths.size()) {
          best = std::min(best, *std::max_element(load.begin(), load.end()));
          return;
        }
        for (size_t j = 0; j < groups.size(); ++j) {
          if (!m.fits(lengths[d], groups[j])) continue;
          load[j] += m.seconds(lengths[d], groups[j]);
          assign(d + 1);
          load[j] -= m.seconds(lengths[d], groups[j]);
        }
      };
      assign(0);
    }
    for (int g = largest; g >= 1; g /= 2)
      if (g <= left) {
        groups.push_back(g);
        partitions(left - g, g);
        groups.pop_back();
      }
  };
  partitions(ranks, ranks);
  return best;
}

TEST(SpPlanner, FindsTheKnownOptimum) {
  // One document needs 2+ ranks (5K tokens, 4K per rank), the ten short
  // ones run best alone: the optimum mixes group sizes (2, 1, 1), which no
  // uniform layout does.
  std::vector<int64_t> lengths = {5000};
  for (int64_t l = 1700; l >= 1250; l -= 50) lengths.push_back(l);
  const SpCostModel m = model();
  const double optimum = brute_force(lengths, 4, m);
  const SpPlan plan = plan_adaptive(lengths, 4, m, 10.0, /*buckets=*/64);
  EXPECT_EQ(check_plan(plan, lengths, 4, m), "");
  EXPECT_EQ(plan.method, "milp");
  EXPECT_NEAR(plan.predicted_s, optimum, 1e-12);
  EXPECT_EQ(plan.groups, (std::vector<int>{2, 1, 1}));
  EXPECT_GT(plan_greedy(lengths, 4, m).predicted_s, 1.2 * optimum);
}

TEST(SpPlanner, NeverBreaksTheMemoryLimit) {
  std::mt19937_64 g(3);
  std::lognormal_distribution<double> length(7.0, 1.2);  // a long tail
  const SpCostModel m = model();
  for (int trial = 0; trial < 30; ++trial) {
    std::vector<int64_t> lengths(10 + g() % 40);
    for (auto& l : lengths) l = std::clamp<int64_t>(static_cast<int64_t>(length(g)), 64, 4 * 4096);
    for (int ranks : {4, 8}) {
      const SpPlan plan = plan_adaptive(lengths, ranks, m, 0.5);
      EXPECT_EQ(check_plan(plan, lengths, ranks, m), "") << "trial " << trial << " ranks " << ranks;
      EXPECT_LE(plan.predicted_s, plan_greedy(lengths, ranks, m).predicted_s + 1e-12);
    }
  }
}

// With no time the solver is skipped; with a millisecond, batches whose
// program takes longer stop early (the solver's best so far, or the greedy
// plan); either way every plan is valid.
TEST(SpPlanner, FallsBackUnderATinyTimeLimit) {
  std::mt19937_64 g(3);
  std::lognormal_distribution<double> length(7.0, 1.2);
  const SpCostModel m = model();
  int cut_short = 0;
  for (int trial = 0; trial < 30; ++trial) {
    std::vector<int64_t> lengths(10 + g() % 40);
    for (auto& l : lengths) l = std::clamp<int64_t>(static_cast<int64_t>(length(g)), 64, 8 * 4096);
    const SpPlan none = plan_adaptive(lengths, 8, m, 0);
    EXPECT_EQ(none.method, "greedy");
    EXPECT_EQ(check_plan(none, lengths, 8, m), "");
    const SpPlan rushed = plan_adaptive(lengths, 8, m, 1e-3);
    EXPECT_EQ(check_plan(rushed, lengths, 8, m), "") << "trial " << trial;
    cut_short += rushed.method != "milp";
  }
  EXPECT_GT(cut_short, 0);
}

TEST(SpPlanner, RefusesADocumentNoGroupHolds) {
  EXPECT_THROW(plan_greedy({5 * 4096}, 4, model()), std::exception);
  SpCostModel capped = model();
  capped.max_group = 2;  // the heads allow no more
  EXPECT_THROW(plan_greedy({3 * 4096}, 4, capped), std::exception);
  EXPECT_THROW(plan_uniform({4096, 4097}, 4, 1, model()), std::exception);  // a static layout too small
}

// No group beyond max_group forms, whatever the ranks.
TEST(SpPlanner, KeepsGroupsWithinTheLargestAllowed) {
  SpCostModel m = model();
  m.max_group = 2;
  const std::vector<int64_t> lengths = {8000, 8000, 6000, 300, 200, 100};
  for (const SpPlan& plan : {plan_adaptive(lengths, 8, m, 1), plan_greedy(lengths, 8, m)}) {
    EXPECT_EQ(check_plan(plan, lengths, 8, m), "");
    for (int g : plan.groups) EXPECT_LE(g, 2);
  }
}

// The profile's samples, made from a known model, give that model back; a
// negative fitted term becomes zero and the other term refits.
TEST(CostCalibration, FitRecoversTheModel) {
  const SpCostModel truth = model();
  SpCostModel memory;
  memory.max_group = 8;
  memory.bytes_per_token = 1, memory.memory_limit = 3000;
  auto points = calibration_points(16384, memory);
  ASSERT_EQ(points.size(), 3u + 2 * 3);
  for (auto& p : points) {
    EXPECT_TRUE(memory.fits(p.length, p.group)) << p.length << " on " << p.group;
    EXPECT_EQ(p.length % p.group, 0);
    p.seconds = truth.seconds(p.length, p.group);
  }
  const SpCostModel fitted = fit_cost_model(points, 1, 3000);
  EXPECT_NEAR(fitted.attention_s, truth.attention_s, 1e-6 * truth.attention_s);
  EXPECT_NEAR(fitted.linear_s, truth.linear_s, 1e-6 * truth.linear_s);
  EXPECT_NEAR(fitted.exchange_s, truth.exchange_s, 1e-6 * truth.exchange_s);
  EXPECT_NEAR(fitted.latency_s, truth.latency_s, 1e-6 * truth.latency_s);
  // Purely linear times (attention too small to see): no negative attention.
  for (auto& p : points) p.seconds = 1e-5 * p.length / p.group * (1 + 1e-3 * (p.length % 7));
  const SpCostModel linear = fit_cost_model(points, 1, 0);
  EXPECT_GE(linear.attention_s, 0);
  EXPECT_GE(linear.exchange_s, 0);
  EXPECT_GE(linear.latency_s, 0);
  EXPECT_NEAR(linear.linear_s, 1e-5, 1e-7);
}

}  // namespace
}  // namespace lt

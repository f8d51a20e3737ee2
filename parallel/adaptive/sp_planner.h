// FlexSP's planning problem (issue 9's first piece): a step's documents of
// very different lengths, and R ranks to run them on. The ranks are split
// into sequence-parallel groups of power-of-two sizes, each document goes to
// one group, and a group runs its documents one after another; the step
// lasts as long as its slowest group. Short documents are cheapest on small
// groups (no all-to-all to pay), long ones need large groups to fit memory.
// plan_adaptive solves it as mixed-integer programs (GLPK), with documents
// bucketed by length to keep them small and a time limit; where the solver
// does not finish, the best greedy plan is used.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lt {

// Predicted cost of one document of L tokens on a group of g ranks: its
// attention is quadratic, the rest linear, both split over g; Ulysses'
// all-to-alls move (g - 1) / g of each rank's activations, plus a latency
// per collective when g > 1. Memory per rank is linear in L / g; a
// document fits a group within the memory limit and max_group.
struct SpCostModel {
  double attention_s = 0;      // seconds per token^2 on one rank
  double linear_s = 0;         // seconds per token on one rank
  double exchange_s = 0;       // seconds per token of a rank's share moved by the all-to-alls
  double latency_s = 0;        // per document on a group of more than one rank
  double bytes_per_token = 0;  // activation memory per token a rank holds
  double memory_limit = 0;     // bytes per rank for activations (0: no limit)
  int max_group = 0;           // the largest group that may form (0: any)

  double seconds(int64_t length, int group) const;
  bool fits(int64_t length, int group) const;
};

struct SpPlan {
  std::vector<int> groups;                      // group sizes, largest first
  std::vector<std::vector<int64_t>> documents;  // indices of the documents each group runs
  double predicted_s = 0;                       // the slowest group's predicted time
  // How it was found: "milp" (the exact program, optimal within its
  // buckets), "milp-limit" (its best when time ran out), "sweep" (the
  // aggregated program), "greedy" (the best uniform layout) or "uniform"
  // (a given group size).
  std::string method;
};

// Every group of size `group` (a static layout): documents assigned
// longest first to the group that finishes earliest. Fails when a document
// does not fit such a group.
SpPlan plan_uniform(const std::vector<int64_t>& lengths, int ranks, int group, const SpCostModel& model);

// The best of the uniform layouts (every group of one size), documents
// assigned longest first to the group that finishes earliest among those
// that can hold them. Fails when no group of up to `ranks` holds the
// longest document.
SpPlan plan_greedy(const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model);

// The best of: the greedy plan; on up to 16 ranks, the exact program over
// group instances (up to half the time); and FlexSP's aggregated program
// (group counts and documents per size, its size independent of the ranks)
// solved for a sweep of step times. Every candidate is improved by moving
// documents off the slowest group. Documents are bucketed by length into
// `buckets` log-spaced buckets, each costed at its longest; at most
// `time_limit_s` of solving in all.
SpPlan plan_adaptive(const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model, double time_limit_s,
                     int buckets = 8);

// No plan is faster: the longest document on its best group, or the least
// rank-seconds of all documents spread evenly over the ranks.
double step_lower_bound(const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model);

// Every document once, groups within the ranks, power-of-two sizes, every
// document fits its group: an empty string, or what is wrong.
std::string check_plan(const SpPlan& plan, const std::vector<int64_t>& lengths, int ranks, const SpCostModel& model);

}  // namespace lt

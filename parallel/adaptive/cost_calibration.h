// The adaptive planner's cost model, fitted to this machine: a short
// profile times one document at a few lengths on one rank (the attention
// and linear terms) and on groups of several ranks (what the all-to-alls
// add beyond the compute they split), and measures the activation bytes per
// token. Fitting is separate from timing so it can be tested on its own.
#pragma once
#include <vector>

#include "parallel/adaptive/sp_planner.h"

namespace lt {

struct CostSample {
  int64_t length = 0;
  int group = 1;
  double seconds = 0;  // forward and backward of one document of `length` on the group
};

// Least squares: t = a L^2 + b L over the samples of one rank; then the
// multi-rank samples' excess over (a L^2 + b L) / g as e (L/g)(g-1)/g + c.
// Coefficients are kept non-negative.
SpCostModel fit_cost_model(const std::vector<CostSample>& samples, double bytes_per_token, double memory_limit);

// The lengths and groups a profile times: on each group size up to
// `memory.max_group`, a short and a long document (three lengths on one
// rank), none longer than `longest` or than fits the group's memory.
std::vector<CostSample> calibration_points(int64_t longest, const SpCostModel& memory);

}  // namespace lt

#include "parallel/adaptive/cost_calibration.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/util/error.h"

namespace lt {
namespace {

// Least squares of y = p u + q v with p, q >= 0: the unconstrained solution,
// or the better of the two one-term fits where it is negative.
std::pair<double, double> nonnegative_fit(const std::vector<double>& u, const std::vector<double>& v,
                                          const std::vector<double>& y) {
  double uu = 0, uv = 0, vv = 0, uy = 0, vy = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    uu += u[i] * u[i], uv += u[i] * v[i], vv += v[i] * v[i], uy += u[i] * y[i], vy += v[i] * y[i];
  }
  const double det = uu * vv - uv * uv;
  if (std::abs(det) > 1e-12 * uu * vv) {
    const double p = (uy * vv - vy * uv) / det, q = (vy * uu - uy * uv) / det;
    if (p >= 0 && q >= 0) return {p, q};
  }
  const double p = uu > 0 ? std::max(0.0, uy / uu) : 0, q = vv > 0 ? std::max(0.0, vy / vv) : 0;
  auto error = [&](double a, double b) {
    double e = 0;
    for (size_t i = 0; i < y.size(); ++i) e += std::pow(y[i] - a * u[i] - b * v[i], 2);
    return e;
  };
  return error(p, 0) <= error(0, q) ? std::pair{p, 0.0} : std::pair{0.0, q};
}

}  // namespace

SpCostModel fit_cost_model(const std::vector<CostSample>& samples, double bytes_per_token, double memory_limit) {
  std::vector<double> squares, linear, single;
  for (const auto& s : samples)
    if (s.group == 1) {
      const double l = static_cast<double>(s.length);
      squares.push_back(l * l), linear.push_back(l), single.push_back(s.seconds);
    }
  LT_CHECK(!single.empty(), "cost calibration: no sample on one rank");
  SpCostModel model;
  std::tie(model.attention_s, model.linear_s) = nonnegative_fit(squares, linear, single);
  model.bytes_per_token = bytes_per_token;
  model.memory_limit = memory_limit;
  std::vector<double> moved, ones, excess;
  for (const auto& s : samples) {
    if (s.group == 1) continue;
    const double l = static_cast<double>(s.length), g = s.group;
    moved.push_back(l / g * (g - 1) / g), ones.push_back(1);
    excess.push_back(s.seconds - (model.attention_s * l * l + model.linear_s * l) / g);
  }
  if (!excess.empty()) std::tie(model.exchange_s, model.latency_s) = nonnegative_fit(moved, ones, excess);
  return model;
}

std::vector<CostSample> calibration_points(int64_t longest, const SpCostModel& memory) {
  std::vector<CostSample> points;
  for (int g = 1; memory.max_group <= 0 || g <= memory.max_group; g *= 2) {
    // The longest document this group holds, in whole tokens per rank.
    int64_t cap = longest / g * g;
    while (cap > 16 * g && !memory.fits(cap, g)) cap = cap * 3 / 4 / g * g;
    const std::vector<int64_t> fractions = g == 1 ? std::vector<int64_t>{8, 2, 1} : std::vector<int64_t>{4, 1};
    for (int64_t f : fractions) points.push_back({std::max<int64_t>(16 * g, cap / f / g * g), g, 0});
    if (memory.max_group <= 0) break;
  }
  return points;
}

}  // namespace lt

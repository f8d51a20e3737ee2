#include "tests/support/all_pairs.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <tuple>

namespace lt::testing {
namespace {

using Pair = std::tuple<size_t, size_t, size_t, size_t>;  // factor i, its value, factor j > i, its value

std::set<Pair> pairs_of(const Row& row) {
  std::set<Pair> out;
  for (size_t i = 0; i < row.size(); ++i)
    for (size_t j = i + 1; j < row.size(); ++j) out.insert({i, row[i], j, row[j]});
  return out;
}

size_t covers(const Row& row, const std::set<Pair>& uncovered) {
  size_t n = 0;
  for (const auto& p : pairs_of(row)) n += uncovered.count(p);
  return n;
}

// A row holding `seed`, the other factors filled one by one (in a random
// order) with the value covering most uncovered pairs so far.
Row greedy_row(const std::vector<Factor>& factors, const Pair& seed, const std::set<Pair>& uncovered,
               std::mt19937& random) {
  const size_t n = factors.size();
  const size_t unset = SIZE_MAX;
  Row row(n, unset);
  row[std::get<0>(seed)] = std::get<1>(seed);
  row[std::get<2>(seed)] = std::get<3>(seed);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), random);
  for (size_t f : order) {
    if (row[f] != unset) continue;
    std::vector<size_t> best;
    size_t best_gain = 0;
    for (size_t v = 0; v < factors[f].values.size(); ++v) {
      size_t gain = 0;
      for (size_t g = 0; g < n; ++g)
        if (g != f && row[g] != unset) gain += uncovered.count(f < g ? Pair{f, v, g, row[g]} : Pair{g, row[g], f, v});
      if (best.empty() || gain > best_gain) best = {v}, best_gain = gain;
      else if (gain == best_gain) best.push_back(v);
    }
    row[f] = best[random() % best.size()];
  }
  return row;
}

}  // namespace

PairwiseDesign all_pairs(const std::vector<Factor>& factors, const std::function<bool(const Row&)>& valid) {
  PairwiseDesign design;
  std::set<Pair> uncovered;
  for (size_t i = 0; i < factors.size(); ++i)
    for (size_t j = i + 1; j < factors.size(); ++j)
      for (size_t a = 0; a < factors[i].values.size(); ++a)
        for (size_t b = 0; b < factors[j].values.size(); ++b) uncovered.insert({i, a, j, b});
  design.pairs = static_cast<int64_t>(uncovered.size());
  std::mt19937 random(20261207);
  while (!uncovered.empty()) {
    // The best of a few greedy rows, each grown from an uncovered pair.
    Row best;
    size_t best_gain = 0;
    auto seed = uncovered.begin();
    for (int attempt = 0; attempt < 24 && seed != uncovered.end(); ++attempt, ++seed) {
      const Row row = greedy_row(factors, *seed, uncovered, random);
      const size_t gain = covers(row, uncovered);
      if (gain > best_gain && valid(row)) best = row, best_gain = gain;
    }
    if (best.empty()) {
      // The first uncovered pair in rows completed at random, until one is valid.
      const Pair pair = *uncovered.begin();
      for (int attempt = 0; attempt < 200 && best.empty(); ++attempt) {
        Row row(factors.size());
        for (size_t f = 0; f < factors.size(); ++f) row[f] = random() % factors[f].values.size();
        row[std::get<0>(pair)] = std::get<1>(pair);
        row[std::get<2>(pair)] = std::get<3>(pair);
        if (valid(row)) best = row;
      }
      if (best.empty()) {
        const auto& [i, a, j, b] = pair;
        design.refused.push_back(factors[i].name + "=" + factors[i].values[a] + ", " + factors[j].name + "=" +
                                 factors[j].values[b]);
        uncovered.erase(pair);
        continue;
      }
    }
    for (const auto& p : pairs_of(best)) uncovered.erase(p);
    design.rows.push_back(best);
  }
  return design;
}

std::string describe(const std::vector<Factor>& factors, const Row& row) {
  std::string out;
  for (size_t f = 0; f < factors.size(); ++f) out += (f ? " " : "") + factors[f].name + "=" + factors[f].values[row[f]];
  return out;
}

}  // namespace lt::testing

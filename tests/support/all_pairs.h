// An all-pairs (pairwise) design: rows of one value per factor such that
// every pair of values of any two factors appears in some row, generated
// greedily (each row covers as many uncovered pairs as it can, AETG's
// way), deterministically. Rows must pass `valid` (the config's own
// checks); a pair no valid row can hold is reported as refused.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace lt::testing {

struct Factor {
  std::string name;
  std::vector<std::string> values;
};

using Row = std::vector<size_t>;  // a value index per factor

struct PairwiseDesign {
  std::vector<Row> rows;
  int64_t pairs = 0;                 // of values of two factors, in all
  std::vector<std::string> refused;  // pairs no valid row holds, as "factor=value, factor=value"
};

PairwiseDesign all_pairs(const std::vector<Factor>& factors, const std::function<bool(const Row&)>& valid);

// "layout=dp2 zero=1 ..."
std::string describe(const std::vector<Factor>& factors, const Row& row);

}  // namespace lt::testing

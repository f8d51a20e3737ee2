// Where a rank's part of a tensor lies in the whole. A part is the slice
// full.narrow(dim, offset, length) of which it may hold only the elements
// [start, end) of the flattened slice (a ZeRO segment). Both a part a file
// holds and a part a rank wants are runs: contiguous ranges of the flattened
// full tensor, each at a place among the part's own elements. Two parts'
// runs, both in order, intersect in one pass, so a rank that resumes under
// another layout copies exactly the overlap from each file, never
// assembling the whole tensor.
#pragma once
#include <cstdint>
#include <vector>

namespace lt {

struct SlicePart {
  std::vector<int64_t> shape;  // the full tensor's
  int64_t dim = 0, offset = 0, length = 0;
  int64_t start = 0, end = 0;  // of the slice's flattened elements
};

struct Run {
  int64_t full, held, length;  // at `full` in the full tensor, `held` in the part
};

// The part's runs, in order of `full`.
std::vector<Run> runs(const SlicePart& part);

// Elements [a, a + length) of one part are [b, b + length) of the other.
struct Overlap {
  int64_t a, b, length;
};
std::vector<Overlap> overlaps(const std::vector<Run>& a, const std::vector<Run>& b);

}  // namespace lt

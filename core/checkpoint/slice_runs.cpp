#include "core/checkpoint/slice_runs.h"

#include <algorithm>

namespace lt {

std::vector<Run> runs(const SlicePart& part) {
  const int64_t dims = static_cast<int64_t>(part.shape.size());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < part.dim; ++d) outer *= part.shape[d];
  for (int64_t d = part.dim + 1; d < dims; ++d) inner *= part.shape[d];
  // Row o of the slice (its elements at index o of the dimensions before
  // `dim`) is one contiguous range of the full tensor.
  const int64_t row = part.length * inner, stride = part.shape[part.dim] * inner;
  std::vector<Run> out;
  if (row == 0 || part.start >= part.end) return out;
  for (int64_t o = part.start / row; o < outer && o * row < part.end; ++o) {
    const int64_t lo = std::max(part.start, o * row), hi = std::min(part.end, (o + 1) * row);
    out.push_back({o * stride + part.offset * inner + (lo - o * row), lo - part.start, hi - lo});
  }
  return out;
}

std::vector<Overlap> overlaps(const std::vector<Run>& a, const std::vector<Run>& b) {
  std::vector<Overlap> out;
  for (size_t i = 0, j = 0; i < a.size() && j < b.size();) {
    const int64_t lo = std::max(a[i].full, b[j].full);
    const int64_t a_end = a[i].full + a[i].length, b_end = b[j].full + b[j].length, hi = std::min(a_end, b_end);
    if (lo < hi) out.push_back({a[i].held + lo - a[i].full, b[j].held + lo - b[j].full, hi - lo});
    (a_end < b_end ? i : j)++;
  }
  return out;
}

}  // namespace lt

#include "parallel/sequence/ring_pieces.h"

#include <algorithm>

namespace lt {
namespace {

// Positions [start, start + length) at rows [row, row + length).
struct Run {
  int64_t row, start, length;
  int64_t end() const { return start + length; }
};

std::vector<Run> runs(const at::Tensor& index) {
  const auto host = index.to(at::kCPU, at::kLong).contiguous();
  const auto* p = host.data_ptr<int64_t>();
  std::vector<Run> out;
  for (int64_t i = 0; i < host.numel(); ++i) {
    if (!out.empty() && p[i] == out.back().end()) ++out.back().length;
    else out.push_back({i, p[i], 1});
  }
  return out;
}

// The causal pieces of run q against run k (positions, then rows).
void causal_pieces(const Run& q, const Run& k, std::vector<Piece>& out) {
  auto piece = [&](int64_t q_from, int64_t q_to, int64_t k_from, int64_t k_to, bool causal) {
    if (q_to > q_from && k_to > k_from)
      out.push_back({q.row + q_from - q.start, q_to - q_from, k.row + k_from - k.start, k_to - k_from, causal});
  };
  // Keys before the first query: every query sees them.
  piece(q.start, q.end(), k.start, std::min(k.end(), q.start), false);
  // Positions both runs hold: the diagonal.
  const int64_t from = std::max(q.start, k.start), to = std::min(q.end(), k.end());
  piece(from, to, from, to, true);
  // Queries after the last key see all of the keys from the diagonal on.
  if (to == k.end()) piece(to, q.end(), from, to, false);
}

}  // namespace

std::vector<Piece> ring_pieces(const at::Tensor& q_index, const at::Tensor& k_index, bool causal) {
  std::vector<Piece> out;
  const auto keys = runs(k_index);
  for (const auto& q : runs(q_index))
    for (const auto& k : keys) {
      if (causal) causal_pieces(q, k, out);
      else out.push_back({q.row, q.length, k.row, k.length, false});
    }
  return out;
}

}  // namespace lt

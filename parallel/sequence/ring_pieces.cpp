#include "parallel/sequence/ring_pieces.h"

#include <algorithm>

namespace lt {
namespace {

// Positions [start, start + length) of one document at tokens [token, token + length).
struct Run {
  int64_t token, start, length, document;
  int64_t end() const { return start + length; }
};

at::Tensor host(const at::Tensor& t) { return t.to(at::kCPU, at::kLong).contiguous(); }

// `documents`: the row's ids, or null.
std::vector<Run> runs(const at::Tensor& index, const int64_t* documents) {
  const auto* position = index.data_ptr<int64_t>();
  std::vector<Run> out;
  for (int64_t i = 0; i < index.numel(); ++i) {
    const int64_t document = documents ? documents[i] : 0;
    if (!out.empty() && position[i] == out.back().end() && document == out.back().document) ++out.back().length;
    else out.push_back({i, position[i], 1, document});
  }
  return out;
}

// The causal pieces of run q against run k (positions, then tokens).
void causal_pieces(int64_t row, const Run& q, const Run& k, std::vector<Piece>& out) {
  auto piece = [&](int64_t q_from, int64_t q_to, int64_t k_from, int64_t k_to, bool causal) {
    if (q_to > q_from && k_to > k_from)
      out.push_back(
          {row, q.token + q_from - q.start, q_to - q_from, k.token + k_from - k.start, k_to - k_from, causal});
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

std::vector<Piece> ring_pieces(const at::Tensor& q_index, const at::Tensor& k_index, bool causal,
                               const at::Tensor& q_documents, const at::Tensor& k_documents) {
  const auto qi = host(q_index), ki = host(k_index);
  const bool documents = q_documents.defined();
  const auto qd = documents ? host(q_documents) : at::Tensor(), kd = documents ? host(k_documents) : at::Tensor();
  std::vector<Piece> out;
  for (int64_t row = 0; row < (documents ? qd.size(0) : 1); ++row) {
    auto ids = [&](const at::Tensor& d) { return documents ? d[row].data_ptr<int64_t>() : nullptr; };
    const auto keys = runs(ki, ids(kd));
    for (const auto& q : runs(qi, ids(qd)))
      for (const auto& k : keys) {
        if (q.document != k.document) continue;
        const int64_t r = documents ? row : -1;
        if (causal) causal_pieces(r, q, k, out);
        else out.push_back({r, q.token, q.length, k.token, k.length, false});
      }
  }
  return out;
}

std::vector<PieceBatch> batch_pieces(const std::vector<Piece>& pieces, int64_t rows, int64_t q_seq, int64_t k_seq,
                                     const at::Device& device) {
  auto on = [&](const std::vector<int64_t>& tokens) {
    return at::tensor(tokens, at::kLong).to(device, /*non_blocking=*/true);
  };
  std::vector<PieceBatch> out;
  for (bool causal : {false, true}) {
    std::vector<int64_t> q_tokens, k_tokens, q_starts{0}, k_starts{0};
    for (const auto& p : pieces) {
      if (p.causal != causal) continue;
      for (int64_t row = std::max<int64_t>(p.row, 0); row < (p.row < 0 ? rows : p.row + 1); ++row) {
        for (int64_t t = p.q_start; t < p.q_start + p.q_length; ++t) q_tokens.push_back(row * q_seq + t);
        for (int64_t t = p.k_start; t < p.k_start + p.k_length; ++t) k_tokens.push_back(row * k_seq + t);
        q_starts.push_back(static_cast<int64_t>(q_tokens.size()));
        k_starts.push_back(static_cast<int64_t>(k_tokens.size()));
      }
    }
    if (q_tokens.empty()) continue;
    out.push_back({causal, on(q_tokens), on(k_tokens), spans_at(std::move(q_starts), 0, device),
                   spans_at(std::move(k_starts), 0, device)});
  }
  return out;
}

}  // namespace lt

// Ring attention's steps without the ring: every visible (query, key) pair in
// exactly one fused call, and each call's gradients taken from the merged
// result add up to the gradient of the whole attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "core/attention/flash.h"
#include "parallel/sequence/ring_pieces.h"
#include "parallel/sequence/ring_step.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::naive_attention;
using testing::relative_error;
using testing::visibility;

at::Tensor positions(std::initializer_list<std::pair<int64_t, int64_t>> runs) {
  std::vector<at::Tensor> parts;
  for (const auto& [from, to] : runs) parts.push_back(at::arange(from, to, at::kLong));
  return at::cat(parts);
}

// How often each (query, key) pair of each row is computed, by the pieces
// as the ring batches them: each piece's tokens (row * seq + place).
at::Tensor coverage(const at::Tensor& q_index, const at::Tensor& k_index, bool causal, const at::Tensor& q_docs,
                    const at::Tensor& k_docs) {
  const int64_t rows = q_docs.defined() ? q_docs.size(0) : 2, q_seq = q_index.numel(), k_seq = k_index.numel();
  auto count = at::zeros({rows * q_seq, rows * k_seq}, at::kLong);
  const auto pieces = ring_pieces(q_index, k_index, causal, q_docs, k_docs);
  for (const auto& batch : batch_pieces(pieces, rows, q_seq, k_seq, at::kCPU)) {
    const auto &qs = *batch.q_spans, &ks = *batch.k_spans;
    for (int64_t i = 0; i < qs.count(); ++i) {
      const int64_t q_length = qs.starts[i + 1] - qs.starts[i], k_length = ks.starts[i + 1] - ks.starts[i];
      const auto q_tokens = batch.q_tokens.narrow(0, qs.starts[i], q_length);
      const auto k_tokens = batch.k_tokens.narrow(0, ks.starts[i], k_length);
      auto seen = at::ones({q_length, k_length}, at::kLong);
      if (batch.causal) {
        EXPECT_EQ(q_length, k_length) << "a causal call must be square";
        seen = seen.tril();
      }
      count.index_put_({q_tokens.unsqueeze(1), k_tokens.unsqueeze(0)}, seen, /*accumulate=*/true);
    }
  }
  // No pair across rows; those of each row: [rows, q_seq, k_seq].
  const auto by_row = count.view({rows, q_seq, rows, k_seq});
  std::vector<at::Tensor> within;
  for (int64_t r = 0; r < rows; ++r) within.push_back(by_row[r].select(1, r));
  auto pairs = at::stack(within);
  EXPECT_EQ(pairs.sum().item<int64_t>(), count.sum().item<int64_t>()) << "a piece crosses rows";
  return pairs;
}

// Causal and not, with and without documents (two rows of their own).
void expect_exact_cover(const at::Tensor& q_index, const at::Tensor& k_index, const at::Tensor& q_docs = {},
                        const at::Tensor& k_docs = {}) {
  auto visible = k_index.unsqueeze(0).le(q_index.unsqueeze(1)).unsqueeze(0);
  auto all = at::ones_like(visible);
  if (q_docs.defined()) {
    const auto same = q_docs.unsqueeze(2).eq(k_docs.unsqueeze(1));
    visible = visible.logical_and(same), all = all.logical_and(same);
  }
  // Without documents, two rows (the pieces then hold for every row).
  const int64_t rows = q_docs.defined() ? q_docs.size(0) : 2;
  auto expected = [&](const at::Tensor& t) { return t.to(at::kLong).expand({rows, -1, -1}); };
  EXPECT_TRUE(coverage(q_index, k_index, true, q_docs, k_docs).equal(expected(visible))) << q_index << k_index;
  EXPECT_TRUE(coverage(q_index, k_index, false, q_docs, k_docs).equal(expected(all)));
}

// Documents of two rows over the positions of `index` (of 0..39): row 0 cut
// at 10 and 25, row 1 at 17; so documents also change inside runs.
at::Tensor documents_at(const at::Tensor& index) {
  return at::stack({index.ge(10).to(at::kLong) + index.ge(25).to(at::kLong), index.ge(17).to(at::kLong) + 5});
}

TEST(RingPieces, CoverEveryVisiblePairOnce) {
  // Zigzag over 4 ranks of 4-token chunks: rank r holds chunks r and 7 - r.
  auto zigzag = [](int64_t r) { return positions({{4 * r, 4 * r + 4}, {4 * (7 - r), 4 * (8 - r)}}); };
  for (int64_t q = 0; q < 4; ++q)
    for (int64_t k = 0; k < 4; ++k) {
      expect_exact_cover(zigzag(q), zigzag(k));
      expect_exact_cover(zigzag(q), zigzag(k), documents_at(zigzag(q)), documents_at(zigzag(k)));
    }
  // Contiguous parts, and runs that overlap without lining up.
  expect_exact_cover(positions({{8, 16}}), positions({{0, 8}}));
  expect_exact_cover(positions({{3, 11}}), positions({{0, 5}, {9, 14}}));
  expect_exact_cover(positions({{0, 8}}), positions({{2, 4}}));
  expect_exact_cover(positions({{2, 4}}), positions({{0, 8}}));
  // Random runs in random order.
  std::mt19937 random(5);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<std::pair<int64_t, int64_t>> runs;
    for (int64_t at = 0; at < 40;) {
      const int64_t length = std::min<int64_t>(40 - at, 1 + random() % 7);
      runs.push_back({at, at + length});
      at += length;
    }
    std::shuffle(runs.begin(), runs.end(), random);
    const auto half = runs.size() / 2;
    std::vector<at::Tensor> q_parts, k_parts;
    for (size_t i = 0; i < runs.size(); ++i)
      (i < half ? q_parts : k_parts).push_back(at::arange(runs[i].first, runs[i].second, at::kLong));
    const auto q = at::cat(q_parts), k = at::cat(k_parts);
    expect_exact_cover(q, k);
    expect_exact_cover(q, q);
    expect_exact_cover(q, k, documents_at(q), documents_at(k));
    expect_exact_cover(q, q, documents_at(q), documents_at(q));
  }
}

// Queries of zigzag rank 0 of 2 (positions 0-5 and 18-23) against two key
// blocks, their own and rank 1's, as two steps of the ring (without the
// ring): merged through the log-sum-exp, then every call's gradients from
// the merged out and lse. The fused calls over the pieces, or the blockwise
// kernel under the mask. On CPU in fp32 against fp32; on CUDA in
// bf16 (host indices and documents, as the batch keeps them) against fp64.
void check_merged_backward(bool masked, bool documents, const at::Device& device) {
  const bool cuda = device.is_cuda();
  if (cuda && !testing::has_cuda()) GTEST_SKIP() << "no CUDA device";
  if (!masked && !flash_available(at::empty({0}))) GTEST_SKIP() << "this LibTorch has no fused flash kernel";
  const auto dtype = cuda ? at::kBFloat16 : at::kFloat;
  const double out_tolerance = cuda ? 8e-3 : 1e-5, grad_tolerance = cuda ? 2e-2 : 1e-5;
  at::manual_seed(11);
  const int64_t heads = 4, kv_heads = 2;
  // Rank 1's block holds its positions in two runs out of order, so the
  // queries' tail run follows both; documents change inside the runs.
  const std::vector<at::Tensor> index{positions({{0, 6}, {18, 24}}), positions({{12, 18}, {6, 12}})};
  const std::vector<at::Tensor> docs{documents_at(index[0]), documents_at(index[1])};
  auto on = [&](const at::Tensor& t) { return t.to(device, dtype); };
  const auto q = at::randn({2, 12, heads, 8}).to(dtype).to(at::kFloat);
  std::vector<at::Tensor> k, v;
  for (int b = 0; b < 2; ++b) {
    k.push_back(at::randn({2, 12, kv_heads, 8}).to(dtype).to(at::kFloat));
    v.push_back(at::randn({2, 12, kv_heads, 8}).to(dtype).to(at::kFloat));
  }
  auto doc = [&](int b) { return documents ? docs[b] : at::Tensor(); };
  auto block = [&](int b) { return RingBlock{on(k[b]), on(v[b]), index[b], doc(b)}; };
  const RingQueries in{on(q), index[0], doc(0), true, !masked, 4};
  auto merged = ring_merge_start(in.q);
  for (int b = 0; b < 2; ++b) ring_forward_step(in, block(b), merged);
  const auto [out, lse] = ring_result(merged, in.q);

  auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble).requires_grad_(); };
  auto q2 = f64(q), k2 = f64(at::cat(k, 1)), v2 = f64(at::cat(v, 1));
  const auto docs2 = documents ? at::cat(docs, 1) : at::Tensor();
  auto [ref_out, ref_lse] =
      naive_attention(q2, k2.repeat_interleave(heads / kv_heads, 2), v2.repeat_interleave(heads / kv_heads, 2),
                      visibility(index[0], at::cat(index), doc(0), docs2));
  EXPECT_LT(relative_error(out.cpu().to(at::kFloat), ref_out.to(at::kFloat)), out_tolerance);
  EXPECT_LT(relative_error(lse.cpu(), ref_lse.to(at::kFloat)), out_tolerance);

  const auto dout = at::randn(q.sizes()).to(dtype).to(at::kFloat);
  (ref_out * dout.to(at::kDouble)).sum().backward();
  auto dq = at::zeros(q.sizes(), merged.out.options());
  std::vector<at::Tensor> dk, dv;
  for (int b = 0; b < 2; ++b) {
    dk.push_back(at::zeros(k[b].sizes(), dq.options()));
    dv.push_back(at::zeros(v[b].sizes(), dq.options()));
    ring_backward_step(in, block(b), out, lse, on(dout), dq, dk[b], dv[b]);
  }
  EXPECT_LT(relative_error(dq.cpu(), q2.grad().to(at::kFloat)), grad_tolerance);
  EXPECT_LT(relative_error(at::cat(dk, 1).cpu(), k2.grad().to(at::kFloat)), grad_tolerance);
  EXPECT_LT(relative_error(at::cat(dv, 1).cpu(), v2.grad().to(at::kFloat)), grad_tolerance);
}

TEST(RingPieces, FusedBackwardFromTheMergedResult) { check_merged_backward(false, false, at::kCPU); }
TEST(RingPieces, FusedBackwardOfPackedDocumentsFromTheMergedResult) { check_merged_backward(false, true, at::kCPU); }
TEST(RingPieces, BlockwiseBackwardFromTheMergedResult) { check_merged_backward(true, true, at::kCPU); }
// The same on the GPU, where the CUDA kernels and the copies of host ids run.
TEST(CudaBf16, RingCallsFromTheMergedResult) {
  for (bool masked : {false, true})
    for (bool documents : {false, true}) check_merged_backward(masked, documents, at::Device(at::kCUDA, 0));
}

}  // namespace
}  // namespace lt

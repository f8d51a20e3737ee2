// Ring attention's steps without the ring: every visible (query, key) pair in
// exactly one fused call, and each call's gradients taken from the merged
// result add up to the gradient of the whole attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "core/attention/blockwise.h"
#include "core/attention/flash.h"
#include "parallel/sequence/ring_pieces.h"
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

// How often each (query, key) pair of each row is computed, by the pieces.
at::Tensor coverage(const at::Tensor& q_index, const at::Tensor& k_index, bool causal, const at::Tensor& q_docs,
                    const at::Tensor& k_docs) {
  const int64_t rows = q_docs.defined() ? q_docs.size(0) : 1;
  auto count = at::zeros({rows, q_index.numel(), k_index.numel()}, at::kLong);
  for (const auto& p : ring_pieces(q_index, k_index, causal, q_docs, k_docs)) {
    auto block = (p.row < 0 ? count : count.narrow(0, p.row, 1))
                     .narrow(1, p.q_start, p.q_length)
                     .narrow(2, p.k_start, p.k_length);
    if (p.causal) {
      EXPECT_EQ(p.q_length, p.k_length) << "a causal call must be square";
      block.add_(at::ones({p.q_length, p.k_length}, at::kLong).tril());
    } else {
      block.add_(1);
    }
  }
  return count;
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
  EXPECT_TRUE(coverage(q_index, k_index, true, q_docs, k_docs).equal(visible.to(at::kLong))) << q_index << k_index;
  EXPECT_TRUE(coverage(q_index, k_index, false, q_docs, k_docs).equal(all.to(at::kLong)));
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
// blocks, their own and rank 1's, merged through the log-sum-exp as the
// ring does; then every call's gradients from the merged out and lse: the
// fused calls over the pieces, or the blockwise kernel under the mask. On
// CPU in fp32 against fp32; on CUDA in bf16 (host indices and documents, as
// the batch keeps them) against fp64.
void check_merged_backward(bool masked, bool documents, const at::Device& device) {
  const bool cuda = device.is_cuda();
  if (cuda && !(at::hasCUDA() && at::getNumGPUs() > 0)) GTEST_SKIP() << "no CUDA device";
  if (!masked && !flash_available(at::empty({0}))) GTEST_SKIP() << "this LibTorch has no fused flash kernel";
  const auto dtype = cuda ? at::kBFloat16 : at::kFloat;
  const double out_tolerance = cuda ? 8e-3 : 1e-5, grad_tolerance = cuda ? 2e-2 : 1e-5;
  at::manual_seed(11);
  const int64_t heads = 4, kv_heads = 2;
  const std::vector<at::Tensor> index{positions({{0, 6}, {18, 24}}), positions({{6, 18}})};
  // Two rows, whose documents change inside the blocks' runs.
  const std::vector<at::Tensor> docs{
      at::tensor({0, 0, 0, 1, 1, 1, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6}, at::kLong).view({2, -1}),
      at::tensor({1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6}, at::kLong).view({2, -1})};
  auto on = [&](const at::Tensor& t) { return t.to(device, dtype); };
  const auto q = at::randn({2, 12, heads, 8}).to(dtype).to(at::kFloat);
  std::vector<at::Tensor> k, v;
  for (int b = 0; b < 2; ++b) {
    k.push_back(at::randn({2, 12, kv_heads, 8}).to(dtype).to(at::kFloat));
    v.push_back(at::randn({2, 12, kv_heads, 8}).to(dtype).to(at::kFloat));
  }
  auto doc = [&](int b) { return documents ? docs[b] : at::Tensor(); };
  auto mask = [&](int b) { return AttentionMask{true, doc(0), doc(b), index[0], index[b], nullptr}; };
  struct Call {
    Piece piece;
    int block;
  };
  std::vector<Call> calls;
  for (int b = 0; b < 2; ++b) {
    if (masked) {
      calls.push_back({{-1, 0, 12, 0, 12, true}, b});
    } else {
      for (const auto& p : ring_pieces(index[0], index[b], true, doc(0), doc(b))) calls.push_back({p, b});
    }
  }
  auto cut = [](const at::Tensor& t, int64_t row, int64_t start, int64_t length, int64_t dim = 1) {
    return (row < 0 ? t : t.narrow(0, row, 1)).narrow(dim, start, length);
  };
  const auto qd = on(q);
  auto out = at::zeros(q.sizes(), qd.options().dtype(at::kFloat));
  auto lse = at::full({2, heads, 12}, -INFINITY, out.options());
  for (const auto& [p, b] : calls) {
    const auto kb = on(k[b]), vb = on(v[b]);
    auto q_part = [&](const at::Tensor& t) { return cut(t, p.row, p.q_start, p.q_length); };
    auto k_part = [&](const at::Tensor& t) { return cut(t, p.row, p.k_start, p.k_length); };
    auto part = masked ? blockwise_forward(qd, kb, vb, mask(b), 4)
                       : flash_attention(q_part(qd), k_part(kb), k_part(vb), p.causal);
    auto o = q_part(out), l = cut(lse, p.row, p.q_start, p.q_length, 2);
    const auto merged = at::logaddexp(l, part.lse);
    auto weight = [&](const at::Tensor& x) { return (x - merged).exp().permute({0, 2, 1}).unsqueeze(-1); };
    o.copy_(o * weight(l) + part.out.to(at::kFloat) * weight(part.lse));
    l.copy_(merged);
  }

  auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble).requires_grad_(); };
  auto q2 = f64(q), k2 = f64(at::cat(k, 1)), v2 = f64(at::cat(v, 1));
  const auto docs2 = documents ? at::cat(docs, 1) : at::Tensor();
  auto [ref_out, ref_lse] =
      naive_attention(q2, k2.repeat_interleave(heads / kv_heads, 2), v2.repeat_interleave(heads / kv_heads, 2),
                      visibility(index[0], at::cat(index), doc(0), docs2));
  EXPECT_LT(relative_error(out.cpu(), ref_out.to(at::kFloat)), out_tolerance);
  EXPECT_LT(relative_error(lse.cpu(), ref_lse.to(at::kFloat)), out_tolerance);

  const auto dout = at::randn(q.sizes()).to(dtype).to(at::kFloat);
  (ref_out * dout.to(at::kDouble)).sum().backward();
  const auto out_d = out.to(dtype), dout_d = on(dout);
  auto dq = at::zeros_like(out);
  std::vector<at::Tensor> dk, dv;
  for (int b = 0; b < 2; ++b) {
    dk.push_back(at::zeros(k[b].sizes(), out.options()));
    dv.push_back(at::zeros(v[b].sizes(), out.options()));
  }
  for (const auto& [p, b] : calls) {
    const auto kb = on(k[b]), vb = on(v[b]);
    auto q_part = [&](const at::Tensor& t) { return cut(t, p.row, p.q_start, p.q_length); };
    auto k_part = [&](const at::Tensor& t) { return cut(t, p.row, p.k_start, p.k_length); };
    auto d = masked ? blockwise_backward(qd, kb, vb, out_d, lse, dout_d, {}, mask(b), 4)
                    : flash_attention_backward(q_part(dout_d), q_part(qd), k_part(kb), k_part(vb), q_part(out_d),
                                               cut(lse, p.row, p.q_start, p.q_length, 2), p.causal);
    q_part(dq).add_(d[0].to(at::kFloat));
    k_part(dk[b]).add_(d[1].to(at::kFloat));
    k_part(dv[b]).add_(d[2].to(at::kFloat));
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

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

// How often each (query, key) pair is computed, by the pieces.
at::Tensor coverage(const at::Tensor& q_index, const at::Tensor& k_index, bool causal) {
  auto count = at::zeros({q_index.numel(), k_index.numel()}, at::kLong);
  for (const auto& p : ring_pieces(q_index, k_index, causal)) {
    auto block = count.narrow(0, p.q_start, p.q_length).narrow(1, p.k_start, p.k_length);
    if (p.causal) {
      EXPECT_EQ(p.q_length, p.k_length) << "a causal call must be square";
      block.add_(at::ones_like(block).tril());
    } else {
      block.add_(1);
    }
  }
  return count;
}

void expect_exact_cover(const at::Tensor& q_index, const at::Tensor& k_index) {
  const auto visible = k_index.unsqueeze(0).le(q_index.unsqueeze(1)).to(at::kLong);
  EXPECT_TRUE(coverage(q_index, k_index, true).equal(visible)) << q_index << k_index;
  EXPECT_TRUE(coverage(q_index, k_index, false).equal(at::ones_like(visible)));
}

TEST(RingPieces, CoverEveryVisiblePairOnce) {
  // Zigzag over 4 ranks of 4-token chunks: rank r holds chunks r and 7 - r.
  auto zigzag = [](int64_t r) { return positions({{4 * r, 4 * r + 4}, {4 * (7 - r), 4 * (8 - r)}}); };
  for (int64_t q = 0; q < 4; ++q)
    for (int64_t k = 0; k < 4; ++k) expect_exact_cover(zigzag(q), zigzag(k));
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
    std::vector<at::Tensor> q, k;
    for (size_t i = 0; i < runs.size(); ++i)
      (i < half ? q : k).push_back(at::arange(runs[i].first, runs[i].second, at::kLong));
    expect_exact_cover(at::cat(q), at::cat(k));
    expect_exact_cover(at::cat(q), at::cat(q));
  }
}

// Queries of zigzag rank 0 of 2 (positions 0-5 and 18-23) against two key
// blocks, their own and rank 1's, merged through the log-sum-exp as the
// ring does; then every call's gradients from the merged out and lse. On
// CPU in fp32 against fp32; on CUDA in bf16 (host indices and documents, as
// the batch keeps them) against fp64.
void check_merged_backward(bool masked, const at::Device& device) {
  const bool cuda = device.is_cuda();
  if (cuda && !(at::hasCUDA() && at::getNumGPUs() > 0)) GTEST_SKIP() << "no CUDA device";
  if (!masked && !flash_available(at::empty({0}))) GTEST_SKIP() << "this LibTorch has no fused flash kernel";
  const auto dtype = cuda ? at::kBFloat16 : at::kFloat;
  const double out_tolerance = cuda ? 8e-3 : 1e-5, grad_tolerance = cuda ? 2e-2 : 1e-5;
  at::manual_seed(11);
  const int64_t heads = 4, kv_heads = 2;
  const std::vector<at::Tensor> index{positions({{0, 6}, {18, 24}}), positions({{6, 18}})};
  // Documents: masked calls only (the fused ones take none).
  const std::vector<at::Tensor> docs{at::tensor({0, 0, 0, 1, 1, 1, 3, 3, 3, 3, 3, 3}, at::kLong).view({1, -1}),
                                     at::tensor({1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3}, at::kLong).view({1, -1})};
  auto on = [&](const at::Tensor& t) { return t.to(device, dtype); };
  const auto q = at::randn({1, 12, heads, 8}).to(dtype).to(at::kFloat);
  std::vector<at::Tensor> k, v;
  for (int b = 0; b < 2; ++b) {
    k.push_back(at::randn({1, 12, kv_heads, 8}).to(dtype).to(at::kFloat));
    v.push_back(at::randn({1, 12, kv_heads, 8}).to(dtype).to(at::kFloat));
  }
  auto doc = [&](int b) { return masked ? docs[b] : at::Tensor(); };
  auto mask = [&](int b) { return AttentionMask{true, doc(0), doc(b), index[0], index[b], nullptr}; };
  struct Call {
    Piece piece;
    int block;
  };
  std::vector<Call> calls;
  for (int b = 0; b < 2; ++b) {
    if (masked) calls.push_back({{0, 12, 0, 12, true}, b});
    else
      for (const auto& p : ring_pieces(index[0], index[b], true)) calls.push_back({p, b});
  }
  auto rows = [](const at::Tensor& t, int64_t start, int64_t length, int64_t dim = 1) {
    return t.narrow(dim, start, length);
  };
  const auto qd = on(q);
  auto out = at::zeros(q.sizes(), qd.options().dtype(at::kFloat));
  auto lse = at::full({1, heads, 12}, -INFINITY, out.options());
  for (const auto& [p, b] : calls) {
    const auto kb = on(k[b]), vb = on(v[b]);
    auto part = masked ? blockwise_forward(qd, kb, vb, mask(b), 4)
                       : flash_attention(rows(qd, p.q_start, p.q_length), rows(kb, p.k_start, p.k_length),
                                         rows(vb, p.k_start, p.k_length), p.causal);
    auto o = rows(out, p.q_start, p.q_length), l = rows(lse, p.q_start, p.q_length, 2);
    const auto merged = at::logaddexp(l, part.lse);
    auto weight = [&](const at::Tensor& x) { return (x - merged).exp().permute({0, 2, 1}).unsqueeze(-1); };
    o.copy_(o * weight(l) + part.out.to(at::kFloat) * weight(part.lse));
    l.copy_(merged);
  }

  auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble).requires_grad_(); };
  auto q2 = f64(q), k2 = f64(at::cat(k, 1)), v2 = f64(at::cat(v, 1));
  const auto docs2 = masked ? at::cat(docs, 1) : at::Tensor();
  auto [ref_out, ref_lse] =
      naive_attention(q2, k2.repeat_interleave(heads / kv_heads, 2), v2.repeat_interleave(heads / kv_heads, 2),
                      visibility(index[0], at::cat(index), masked ? docs[0] : at::Tensor(), docs2));
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
    auto q_rows = [&](const at::Tensor& t) { return rows(t, p.q_start, p.q_length); };
    auto k_rows = [&](const at::Tensor& t) { return rows(t, p.k_start, p.k_length); };
    auto d = masked ? blockwise_backward(qd, kb, vb, out_d, lse, dout_d, {}, mask(b), 4)
                    : flash_attention_backward(q_rows(dout_d), q_rows(qd), k_rows(kb), k_rows(vb), q_rows(out_d),
                                               rows(lse, p.q_start, p.q_length, 2), p.causal);
    q_rows(dq).add_(d[0].to(at::kFloat));
    k_rows(dk[b]).add_(d[1].to(at::kFloat));
    k_rows(dv[b]).add_(d[2].to(at::kFloat));
  }
  EXPECT_LT(relative_error(dq.cpu(), q2.grad().to(at::kFloat)), grad_tolerance);
  EXPECT_LT(relative_error(at::cat(dk, 1).cpu(), k2.grad().to(at::kFloat)), grad_tolerance);
  EXPECT_LT(relative_error(at::cat(dv, 1).cpu(), v2.grad().to(at::kFloat)), grad_tolerance);
}

TEST(RingPieces, FusedBackwardFromTheMergedResult) { check_merged_backward(false, at::kCPU); }
TEST(RingPieces, BlockwiseBackwardFromTheMergedResult) { check_merged_backward(true, at::kCPU); }
// The same on the GPU, where the CUDA kernels and the copies of host ids run.
TEST(CudaBf16, RingCallsFusedBackwardFromTheMergedResult) { check_merged_backward(false, at::Device(at::kCUDA, 0)); }
TEST(CudaBf16, RingCallsBlockwiseBackwardFromTheMergedResult) { check_merged_backward(true, at::Device(at::kCUDA, 0)); }

}  // namespace
}  // namespace lt

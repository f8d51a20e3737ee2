// Every attention kernel against softmax(QK^T)V with an explicit mask:
// values, log-sum-exp and gradients, for causal, packed-document, offset
// (ring-style) and grouped-query cases.
#include <gtest/gtest.h>

#include <cmath>

#include "core/attention/attention.h"
#include "core/attention/document_spans.h"
#include "core/attention/flash.h"
#include "tests/support/reference.h"

namespace lt {
namespace {

using testing::naive_attention;
using testing::relative_error;
using testing::visibility;

struct Case {
  int64_t batch = 2, sq = 37, sk = 37, heads = 4, kv_heads = 4, dim = 16;
  bool documents = false;
  bool offset = false;  // queries are a later block than the keys
};

at::Tensor documents_of(int64_t batch, int64_t seq) {
  // Row 0: three documents; row 1: two; boundaries not on block edges.
  auto d = at::zeros({batch, seq}, at::kLong);
  d[0].narrow(0, seq / 4, seq - seq / 4).fill_(1);
  d[0].narrow(0, seq / 2 + 3, seq - seq / 2 - 3).fill_(2);
  if (batch > 1) d[1].narrow(0, seq / 3, seq - seq / 3).fill_(5);
  return d;
}

void check_kernel(const Case& c, AttentionKernel kernel) {
  if (kernel == AttentionKernel::flash && !flash_available(at::empty({0})))
    GTEST_SKIP() << "this LibTorch has no fused flash kernel";
  at::manual_seed(7);
  auto q = at::randn({c.batch, c.sq, c.heads, c.dim}).requires_grad_();
  auto k = at::randn({c.batch, c.sk, c.kv_heads, c.dim}).requires_grad_();
  auto v = at::randn({c.batch, c.sk, c.kv_heads, c.dim}).requires_grad_();
  AttentionMask mask;
  auto q_index = at::arange(c.sq, at::kLong), k_index = at::arange(c.sk, at::kLong);
  if (c.offset) {
    q_index = q_index + c.sk / 2;  // queries start halfway into the keys
    mask.q_index = q_index;
    mask.k_index = k_index;
  }
  if (c.documents) {
    mask.q_document = documents_of(c.batch, c.sq);
    mask.k_document = c.sq == c.sk ? mask.q_document : documents_of(c.batch, c.sk);
  }
  auto result = attention(q, k, v, mask, {kernel, 16});

  auto q2 = q.detach().clone().requires_grad_(), k2 = k.detach().clone().requires_grad_(),
       v2 = v.detach().clone().requires_grad_();
  const int64_t group = c.heads / c.kv_heads;
  auto [ref_out, ref_lse] = naive_attention(q2, k2.repeat_interleave(group, 2), v2.repeat_interleave(group, 2),
                                            visibility(q_index, k_index, mask.q_document, mask.k_document));
  EXPECT_LT(relative_error(result.out, ref_out), 1e-5);
  EXPECT_LT(relative_error(result.lse, ref_lse), 1e-5);

  auto grad = at::randn_like(ref_out);
  (result.out * grad).sum().backward();
  (ref_out * grad).sum().backward();
  EXPECT_LT(relative_error(q.grad(), q2.grad()), 1e-5);
  EXPECT_LT(relative_error(k.grad(), k2.grad()), 1e-5);
  EXPECT_LT(relative_error(v.grad(), v2.grad()), 1e-5);
}

TEST(Attention, BlockwiseCausal) { check_kernel({}, AttentionKernel::blockwise); }
TEST(Attention, FlashCausal) { check_kernel({}, AttentionKernel::flash); }
TEST(Attention, BlockwiseDocuments) { check_kernel({.documents = true}, AttentionKernel::blockwise); }
TEST(Attention, FlashDocuments) { check_kernel({.documents = true}, AttentionKernel::flash); }
TEST(Attention, BlockwiseGroupedQuery) { check_kernel({.heads = 8, .kv_heads = 2}, AttentionKernel::blockwise); }
TEST(Attention, AutoGroupedQueryDocuments) {
  check_kernel({.heads = 6, .kv_heads = 3, .documents = true}, AttentionKernel::automatic);
}
TEST(Attention, BlockwiseOffsetPositions) {
  check_kernel({.sq = 24, .sk = 48, .offset = true}, AttentionKernel::blockwise);
}
TEST(Attention, AutoOffsetPositionsWithDocuments) {
  check_kernel({.sq = 24, .sk = 48, .documents = true, .offset = true}, AttentionKernel::automatic);
}

// Packed documents as the fused kernels take them, found on the host.
TEST(DocumentSpans, CutWhereTheDocumentChangesAndWhereARowEnds) {
  // Row 1 starts with the id row 0 ends with: a span of its own all the same.
  const auto documents = at::tensor({0, 0, 1, 1, 1, 1, 1, 2, 2, 2}, at::kLong).view({2, 5});
  const auto spans = document_spans(documents);
  EXPECT_EQ(spans->starts, (std::vector<int64_t>{0, 2, 5, 7, 10}));
  EXPECT_EQ(spans->longest, 3);
  EXPECT_EQ(spans->row_length, 5);
  EXPECT_TRUE(spans->cumulative.equal(at::tensor({0, 2, 5, 7, 10}, at::kInt)));
  const auto second = spans->rows(1, 1);
  EXPECT_EQ(second->starts, (std::vector<int64_t>{0, 2, 5}));
  EXPECT_EQ(second->longest, 3);
  EXPECT_TRUE(second->cumulative.equal(at::tensor({0, 2, 5}, at::kInt)));
}

// The fused kernels follow the host's spans and never read the ids: under
// ids that say "one document", the spans alone give the packed result. Spans
// of other rows (a whole sequence, for a shard of it) are not taken.
TEST(Attention, FlashFollowsTheHostSpans) {
  if (!flash_available(at::empty({0}))) GTEST_SKIP() << "this LibTorch has no fused flash kernel";
  at::manual_seed(5);
  auto q = at::randn({2, 37, 4, 16}), k = at::randn({2, 37, 4, 16}), v = at::randn({2, 37, 4, 16});
  AttentionMask packed, host;
  packed.q_document = packed.k_document = documents_of(2, 37);
  host.q_document = host.k_document = at::zeros({2, 37}, at::kLong);
  host.spans = document_spans(packed.q_document);
  const auto expected = attention(q, k, v, packed, {AttentionKernel::flash}),
             followed = attention(q, k, v, host, {AttentionKernel::flash});
  EXPECT_TRUE(followed.out.equal(expected.out));
  EXPECT_TRUE(followed.lse.equal(expected.lse));
  host.spans = document_spans(documents_of(2, 74));
  const auto one_document = attention(q, k, v, host, {AttentionKernel::flash});
  EXPECT_LT(relative_error(one_document.out, attention(q, k, v, {}, {AttentionKernel::flash}).out), 1e-6);
}

// The variable-length kernel's log-sum-exp comes as [heads, tokens] or
// padded per span, [spans, heads, longest]: both give [heads, tokens].
TEST(Attention, VariableLengthLogSumExpInEitherLayout) {
  const auto spans = document_spans(at::tensor({0, 0, 1, 1, 1, 1, 1, 2, 2, 2}, at::kLong).view({2, 5}));
  const auto by_token = at::randn({3, 10});
  auto padded = at::full({spans->count(), 3, spans->longest}, std::nan(""));
  for (int64_t i = 0; i < spans->count(); ++i) {
    const int64_t start = spans->starts[i], length = spans->starts[i + 1] - start;
    padded[i].narrow(1, 0, length).copy_(by_token.narrow(1, start, length));
  }
  EXPECT_TRUE(lse_by_token(by_token, *spans).equal(by_token));
  EXPECT_TRUE(lse_by_token(padded, *spans).equal(by_token));
}

TEST(Attention, FlashRefusesOffsetPositions) {
  auto q = at::randn({1, 8, 2, 8});
  AttentionMask mask;
  mask.q_index = at::arange(8, at::kLong) + 8;
  mask.k_index = at::arange(8, at::kLong);
  EXPECT_THROW(attention(q, q, q, mask, {AttentionKernel::flash, 16}), std::exception);
}

// Ring attention merges partial results through the log-sum-exp, so its
// gradient must flow too: d lse / d s is the softmax.
TEST(Attention, BlockwiseLogSumExpGradient) {
  at::manual_seed(3);
  auto q = at::randn({1, 20, 2, 8}).requires_grad_();
  auto k = at::randn({1, 20, 2, 8}).requires_grad_();
  auto v = at::randn({1, 20, 2, 8}).requires_grad_();
  auto result = attention(q, k, v, {}, {AttentionKernel::blockwise, 8});
  auto q2 = q.detach().clone().requires_grad_(), k2 = k.detach().clone().requires_grad_();
  auto index = at::arange(20, at::kLong);
  auto ref = naive_attention(q2, k2, v.detach(), visibility(index, index, {}, {})).second;
  auto w = at::randn_like(ref);
  (result.lse * w).sum().backward();
  (ref * w).sum().backward();
  EXPECT_LT(relative_error(q.grad(), q2.grad()), 1e-5);
  EXPECT_LT(relative_error(k.grad(), k2.grad()), 1e-5);
}

// A query block whose keys are all in the future sees nothing: output 0, lse -inf.
TEST(Attention, FullyMaskedRowsAreZero) {
  auto q = at::randn({1, 4, 1, 8}), k = at::randn({1, 4, 1, 8});
  AttentionMask mask;
  mask.q_index = at::arange(4, at::kLong);
  mask.k_index = at::arange(4, at::kLong) + 100;
  auto result = attention(q, k, k, mask, {AttentionKernel::blockwise, 16});
  EXPECT_EQ(result.out.abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(result.lse.isneginf().all().item<bool>());
}

}  // namespace
}  // namespace lt

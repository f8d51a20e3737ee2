#include "parallel/sequence/ring_step.h"

#include <limits>

#include "core/attention/blockwise.h"
#include "core/attention/flash.h"
#include "parallel/sequence/ring_pieces.h"

namespace lt {
namespace {

// lse [batch, heads, seq] -> [batch * seq, heads], as the rows laid out (laid_out).
at::Tensor token_major_lse(const at::Tensor& lse) { return lse.permute({0, 2, 1}).reshape({-1, lse.size(1)}); }

AttentionMask block_mask(const RingQueries& in, const RingBlock& b) {
  AttentionMask mask;
  mask.causal = in.causal;
  mask.q_index = in.index, mask.k_index = b.index;
  mask.q_document = in.documents, mask.k_document = b.documents;
  return mask;
}

// A causal block whose every key comes after every query adds nothing
// (host indices: no wait for the device).
bool visible(const RingQueries& in, const RingBlock& b) {
  return !in.causal || b.index.min().item<int64_t>() <= in.index.max().item<int64_t>();
}

std::vector<PieceBatch> step_batches(const RingQueries& in, const RingBlock& b) {
  return batch_pieces(ring_pieces(in.index, b.index, in.causal, in.documents, b.documents), in.q.size(0), in.q.size(1),
                      b.k.size(1), in.q.device());
}

// Adds one call's partial results (out [n, heads, head_dim], lse [heads, n])
// to the merged ones of `tokens` ([n]). A token may come several times (in
// one call a query run meets each key run it follows): the weights are
// taken against the largest log-sum-exp of each token, then summed.
void merge(RingMerge& m, const at::Tensor& tokens, const AttentionResult& part) {
  const auto part_lse = part.lse.t();
  auto top = m.lse.scatter_reduce(0, tokens.unsqueeze(1).expand_as(part_lse), part_lse, "amax");
  top.masked_fill_(at::isinf(top), 0);  // nothing seen yet: every weight is 0
  const auto weight = (m.lse - top).exp(), part_weight = (part_lse - top.index_select(0, tokens)).exp();
  const auto total = weight.index_add(0, tokens, part_weight);
  m.out.mul_(weight.unsqueeze(-1))
      .index_add_(0, tokens, part.out.to(at::kFloat) * part_weight.unsqueeze(-1))
      .div_(total.clamp_min(std::numeric_limits<float>::min()).unsqueeze(-1));
  m.lse = top.add_(total.log_());
}

}  // namespace

RingMerge ring_merge_start(const at::Tensor& q) {
  const auto options = q.options().dtype(at::kFloat);
  const int64_t tokens = q.size(0) * q.size(1);
  return {at::zeros({tokens, q.size(2), q.size(3)}, options),
          at::full({tokens, q.size(2)}, -std::numeric_limits<double>::infinity(), options)};
}

AttentionResult ring_result(const RingMerge& merged, const at::Tensor& q) {
  return {merged.out.view(q.sizes()).to(q.scalar_type()),
          merged.lse.view({q.size(0), q.size(1), q.size(2)}).permute({0, 2, 1}).contiguous()};
}

// The kernels take the block's kv heads as they travel (grouped-query attention).
void ring_forward_step(const RingQueries& in, const RingBlock& b, RingMerge& merged) {
  if (!in.fused) {
    if (!visible(in, b)) return;
    const auto part = blockwise_forward(in.q, b.k, b.v, block_mask(in, b), in.block);
    const auto every = at::arange(merged.lse.size(0), merged.lse.options().dtype(at::kLong));
    merge(merged, every, {laid_out(part.out), token_major_lse(part.lse).t()});
    return;
  }
  const auto q = laid_out(in.q), k = laid_out(b.k), v = laid_out(b.v);
  for (const auto& batch : step_batches(in, b)) {
    const auto &qt = batch.q_tokens, &kt = batch.k_tokens;
    merge(merged, qt,
          flash_varlen(q.index_select(0, qt), k.index_select(0, kt), v.index_select(0, kt), *batch.q_spans,
                       *batch.k_spans, batch.causal));
  }
}

void ring_backward_step(const RingQueries& in, const RingBlock& b, const at::Tensor& out, const at::Tensor& lse,
                        const at::Tensor& dout, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  if (!in.fused) {
    if (!visible(in, b)) return;
    const auto d = blockwise_backward(in.q, b.k, b.v, out, lse, dout, {}, block_mask(in, b), in.block);
    dq.add_(d[0].to(at::kFloat));
    dk.add_(d[1].to(at::kFloat));
    dv.add_(d[2].to(at::kFloat));
    return;
  }
  const auto q = laid_out(in.q), k = laid_out(b.k), v = laid_out(b.v), o = laid_out(out), g = laid_out(dout),
             l = token_major_lse(lse);
  // Views of the accumulators (contiguous), added to in place.
  auto dq_t = dq.view({-1, dq.size(2), dq.size(3)}), dk_t = dk.view({-1, dk.size(2), dk.size(3)}),
       dv_t = dv.view({-1, dv.size(2), dv.size(3)});
  for (const auto& batch : step_batches(in, b)) {
    const auto &qt = batch.q_tokens, &kt = batch.k_tokens;
    const auto d = flash_varlen_backward(g.index_select(0, qt), q.index_select(0, qt), k.index_select(0, kt),
                                         v.index_select(0, kt), o.index_select(0, qt), l.index_select(0, qt).t(),
                                         *batch.q_spans, *batch.k_spans, batch.causal);
    dq_t.index_add_(0, qt, d[0].to(at::kFloat));
    dk_t.index_add_(0, kt, d[1].to(at::kFloat));
    dv_t.index_add_(0, kt, d[2].to(at::kFloat));
  }
}

}  // namespace lt

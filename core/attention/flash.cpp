#include "core/attention/flash.h"

#include <vector>

#include "core/util/error.h"
#include "core/util/torch_version.h"

namespace lt {

bool flash_available(const at::Tensor& q) {
  if (!LT_HAS_FUSED_FLASH_ATTENTION) return false;
  if (q.device().is_cpu()) return true;
  // The CUDA kernels (the variable-length one without padding) take head
  // widths that are multiples of 8, up to 256.
  return q.device().is_cuda() && (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf) &&
         q.size(-1) % 8 == 0 && q.size(-1) <= 256;
}

namespace {

// LibTorch's CPU flash kernel in bf16 trails its own fp32 version on short
// sequences of narrow heads (its bf16 backward: 2.4 ms against 0.9 ms at 128
// tokens of 8 x 32, level at 1024 x 32, 512 x 64 and 256 x 128; measured
// over 128-4096 tokens and head_dim 32-128 on this project's CPUs): there
// the block computes in fp32.
constexpr int64_t kCpuBf16MinTokensTimesHeadDim = 32768;

bool cpu_bf16_in_fp32(const at::Tensor& q) {
  return q.device().is_cpu() && q.scalar_type() == at::kBFloat16 &&
         q.size(1) * q.size(3) < kCpuBf16MinTokensTimesHeadDim;
}

at::Tensor fp32(const at::Tensor& t) { return t.to(at::kFloat); }

// The kernels take [batch, heads, seq, head_dim]; ours are [batch, seq, heads, head_dim].
at::Tensor heads_first(const at::Tensor& t) { return t.transpose(1, 2); }

}  // namespace

AttentionResult flash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal) {
  if (cpu_bf16_in_fp32(q)) {
    auto result = flash_attention(fp32(q), fp32(k), fp32(v), causal);
    return {result.out.to(at::kBFloat16), result.lse};
  }
  auto qt = heads_first(q), kt = heads_first(k), vt = heads_first(v);
  at::Tensor out, lse;
#if !LT_HAS_FUSED_FLASH_ATTENTION
  fail("attention: this LibTorch has no fused flash kernel; use model.attention: blockwise");
#else
  if (q.device().is_cpu()) {
    std::tie(out, lse) = at::_scaled_dot_product_flash_attention_for_cpu(qt, kt, vt, 0.0, causal);
  } else {
    auto result = at::_scaled_dot_product_flash_attention(qt, kt, vt, 0.0, causal);
    out = std::get<0>(result);
    lse = std::get<1>(result);
  }
#endif
  return {heads_first(out), lse.to(at::kFloat)};
}

std::array<at::Tensor, 3> flash_attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                                   bool causal) {
  if (cpu_bf16_in_fp32(q)) {
    auto d = flash_attention_backward(fp32(dout), fp32(q), fp32(k), fp32(v), fp32(out), lse, causal);
    return {d[0].to(q.scalar_type()), d[1].to(q.scalar_type()), d[2].to(q.scalar_type())};
  }
  const auto g = heads_first(dout.to(q.scalar_type())), qt = heads_first(q), kt = heads_first(k), vt = heads_first(v),
             ot = heads_first(out.to(q.scalar_type()));
  const auto l = lse.to(at::kFloat).contiguous();
  std::tuple<at::Tensor, at::Tensor, at::Tensor> d;
#if !LT_HAS_FUSED_FLASH_ATTENTION
  fail("attention: this LibTorch has no fused flash kernel; use model.attention: blockwise");
#else
  if (q.device().is_cpu()) {
    d = at::_scaled_dot_product_flash_attention_for_cpu_backward(g, qt, kt, vt, ot, l, 0.0, causal);
  } else {
    // Without dropout the kernel reads no random state.
    const auto none = at::empty({}, at::kLong);
    d = at::_scaled_dot_product_flash_attention_backward(g, qt, kt, vt, ot, l, at::Tensor(), at::Tensor(), q.size(1),
                                                         k.size(1), 0.0, causal, none, none);
  }
#endif
  return {heads_first(std::get<0>(d)), heads_first(std::get<1>(d)), heads_first(std::get<2>(d))};
}

namespace {

// [batch, seq, heads, head_dim] -> the rows laid end to end, [batch * seq, heads, head_dim].
at::Tensor laid_out(const at::Tensor& t) { return t.reshape({t.size(0) * t.size(1), t.size(2), t.size(3)}); }

// One fused call: CUDA's variable-length kernel reads where each span starts
// from the device copy of the host's cuts.
AttentionResult varlen_flash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const DocumentSpans& spans, bool causal) {
#if !LT_HAS_FUSED_FLASH_ATTENTION
  fail("attention: this LibTorch has no fused flash kernel; use model.attention: blockwise");
#else
  LT_CHECK(spans.cumulative.device() == q.device(), "attention: the document spans are not on the queries' device");
  auto result = at::_flash_attention_forward(laid_out(q), laid_out(k), laid_out(v), spans.cumulative, spans.cumulative,
                                             spans.longest, spans.longest, 0.0, causal, false);
  return {std::get<0>(result).view(q.sizes()), lse_by_row(std::get<1>(result), spans, q.size(0))};
#endif
}

// LibTorch's CPU kernel takes no lengths: one call per span, at host offsets.
AttentionResult flash_per_span(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const DocumentSpans& spans, bool causal) {
  const auto qs = laid_out(q), ks = laid_out(k), vs = laid_out(v);
  std::vector<at::Tensor> outs, lses;
  for (int64_t i = 0; i < spans.count(); ++i) {
    const int64_t start = spans.starts[i], length = spans.starts[i + 1] - start;
    auto span = [&](const at::Tensor& t) { return t.narrow(0, start, length).unsqueeze(0); };
    auto part = flash_attention(span(qs), span(ks), span(vs), causal);
    outs.push_back(part.out.squeeze(0));
    lses.push_back(part.lse.squeeze(0));
  }
  return {at::cat(outs, 0).view(q.sizes()), lse_by_row(at::cat(lses, 1), spans, q.size(0))};
}

}  // namespace

at::Tensor lse_by_row(const at::Tensor& lse, const DocumentSpans& spans, int64_t batch) {
  auto by_token = lse;
  if (lse.dim() == 3) {
    // Each token's entry, found on the device: token t of span i (starts[i]
    // <= t < starts[i + 1]) sits at i * longest + t - starts[i].
    const auto starts = spans.cumulative.to(at::kLong);
    const auto token = at::arange(spans.tokens(), starts.options());
    const auto span = at::searchsorted(starts.narrow(0, 1, spans.count()), token, /*out_int32=*/false, /*right=*/true);
    const auto entry = span * spans.longest + token - starts.index_select(0, span);
    by_token = lse.transpose(0, 1).reshape({lse.size(1), -1}).index_select(1, entry);
  }
  return by_token.reshape({by_token.size(0), batch, spans.row_length}).transpose(0, 1).to(at::kFloat);
}

bool spans_cover(const DocumentSpans& spans, const at::Tensor& q) {
  return spans.row_length == q.size(1) && spans.tokens() == q.size(0) * q.size(1);
}

AttentionResult flash_attention_by_document(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const DocumentSpans& spans, bool causal) {
  LT_CHECK(spans_cover(spans, q), "attention: the document spans do not cover these rows");
  return q.is_cuda() ? varlen_flash_attention(q, k, v, spans, causal) : flash_per_span(q, k, v, spans, causal);
}

}  // namespace lt

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

at::Tensor laid_out(const at::Tensor& t) { return t.reshape({t.size(0) * t.size(1), t.size(2), t.size(3)}); }

namespace {

// Sequence i of `spans` in t, along `dim` (tokens), as a batch of one.
at::Tensor sequence(const at::Tensor& t, const DocumentSpans& spans, int64_t i, int64_t dim = 0) {
  return t.narrow(dim, spans.starts[i], spans.starts[i + 1] - spans.starts[i]).unsqueeze(0);
}

// CUDA's variable-length kernel reads where each sequence starts from the
// device copies of the host's cuts.
bool varlen_kernel(const at::Tensor& q, const DocumentSpans& q_spans, const DocumentSpans& k_spans) {
  if (!q.is_cuda()) return false;
  LT_CHECK(q_spans.cumulative.device() == q.device() && k_spans.cumulative.device() == q.device(),
           "attention: the sequences' cuts are not on the queries' device");
  return true;
}

}  // namespace

AttentionResult flash_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const DocumentSpans& q_spans, const DocumentSpans& k_spans, bool causal) {
  LT_CHECK(q_spans.count() == k_spans.count() && q_spans.tokens() == q.size(0) && k_spans.tokens() == k.size(0),
           "attention: the sequences' cuts do not fit the tokens");
#if !LT_HAS_FUSED_FLASH_ATTENTION
  fail("attention: this LibTorch has no fused flash kernel; use model.attention: blockwise");
#else
  if (varlen_kernel(q, q_spans, k_spans)) {
    auto result = at::_flash_attention_forward(q, k, v, q_spans.cumulative, k_spans.cumulative, q_spans.longest,
                                               k_spans.longest, 0.0, causal, false);
    return {std::get<0>(result), lse_by_token(std::get<1>(result), q_spans)};
  }
#endif
  std::vector<at::Tensor> outs, lses;
  for (int64_t i = 0; i < q_spans.count(); ++i) {
    auto part = flash_attention(sequence(q, q_spans, i), sequence(k, k_spans, i), sequence(v, k_spans, i), causal);
    outs.push_back(part.out.squeeze(0));
    lses.push_back(part.lse.squeeze(0));
  }
  return {at::cat(outs, 0), at::cat(lses, 1)};
}

std::array<at::Tensor, 3> flash_varlen_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                                const DocumentSpans& q_spans, const DocumentSpans& k_spans,
                                                bool causal) {
#if LT_HAS_FUSED_FLASH_ATTENTION && LT_VARLEN_LSE_BY_TOKEN
  if (varlen_kernel(q, q_spans, k_spans)) {
    // Without dropout the kernel reads no random state.
    const auto none = at::empty({}, at::kLong);
    auto d = at::_flash_attention_backward(dout.to(q.scalar_type()), q, k, v, out.to(q.scalar_type()),
                                           lse.to(at::kFloat).contiguous(), q_spans.cumulative, k_spans.cumulative,
                                           q_spans.longest, k_spans.longest, 0.0, causal, none, none);
    return {std::get<0>(d), std::get<1>(d), std::get<2>(d)};
  }
#endif
  std::array<std::vector<at::Tensor>, 3> parts;
  for (int64_t i = 0; i < q_spans.count(); ++i) {
    auto d = flash_attention_backward(sequence(dout, q_spans, i), sequence(q, q_spans, i), sequence(k, k_spans, i),
                                      sequence(v, k_spans, i), sequence(out, q_spans, i), sequence(lse, q_spans, i, 1),
                                      causal);
    for (int j = 0; j < 3; ++j) parts[j].push_back(d[j].squeeze(0));
  }
  return {at::cat(parts[0], 0), at::cat(parts[1], 0), at::cat(parts[2], 0)};
}

at::Tensor lse_by_token(const at::Tensor& lse, const DocumentSpans& spans) {
  if (lse.dim() == 2) return lse.to(at::kFloat);
  // Each token's entry, found on the device: token t of span i (starts[i]
  // <= t < starts[i + 1]) sits at i * longest + t - starts[i].
  const auto starts = spans.cumulative.to(at::kLong);
  const auto token = at::arange(spans.tokens(), starts.options());
  const auto span = at::searchsorted(starts.narrow(0, 1, spans.count()), token, /*out_int32=*/false, /*right=*/true);
  const auto entry = span * spans.longest + token - starts.index_select(0, span);
  return lse.transpose(0, 1).reshape({lse.size(1), -1}).index_select(1, entry).to(at::kFloat);
}

bool spans_cover(const DocumentSpans& spans, const at::Tensor& q) {
  return spans.row_length == q.size(1) && spans.tokens() == q.size(0) * q.size(1);
}

AttentionResult flash_attention_by_document(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const DocumentSpans& spans, bool causal) {
  LT_CHECK(spans_cover(spans, q), "attention: the document spans do not cover these rows");
  auto result = flash_varlen(laid_out(q), laid_out(k), laid_out(v), spans, spans, causal);
  // [heads, tokens] -> [batch, heads, seq]
  const auto lse = result.lse.view({result.lse.size(0), q.size(0), q.size(1)}).transpose(0, 1);
  return {result.out.view(q.sizes()), lse};
}

}  // namespace lt

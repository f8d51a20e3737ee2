#include "core/attention/flash.h"

#include <vector>

#include "core/util/error.h"
#include "core/util/torch_version.h"

namespace lt {

bool flash_available(const at::Tensor& q) {
  if (!LT_HAS_FUSED_FLASH_ATTENTION) return false;
  if (q.device().is_cpu()) return true;
  return q.device().is_cuda() && (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf);
}

// LibTorch's CPU flash kernel in bf16 trails its own fp32 version on short
// sequences of narrow heads (its bf16 backward: 2.4 ms against 0.9 ms at 128
// tokens of 8 x 32, level at 1024 x 32, 512 x 64 and 256 x 128; measured
// over 128-4096 tokens and head_dim 32-128 on this project's CPUs): there
// the block computes in fp32.
constexpr int64_t kCpuBf16MinTokensTimesHeadDim = 32768;

AttentionResult flash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal) {
  if (q.device().is_cpu() && q.scalar_type() == at::kBFloat16 &&
      q.size(1) * q.size(3) < kCpuBf16MinTokensTimesHeadDim) {
    auto fp32 = flash_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), causal);
    return {fp32.out.to(at::kBFloat16), fp32.lse};
  }
  // The kernels take [batch, heads, seq, head_dim].
  auto qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
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
  return {out.transpose(1, 2), lse.to(at::kFloat)};
}

AttentionResult flash_attention_by_document(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& documents, bool causal) {
  const auto docs = documents.to(at::kCPU).contiguous();
  const auto seq = docs.size(1);
  const auto* ids = docs.data_ptr<int64_t>();
  std::vector<at::Tensor> rows_out, rows_lse;
  for (int64_t b = 0; b < docs.size(0); ++b) {
    std::vector<at::Tensor> outs, lses;
    const int64_t* row = ids + b * seq;
    for (int64_t start = 0; start < seq;) {
      int64_t end = start + 1;
      while (end < seq && row[end] == row[start]) ++end;
      auto slice = [&](const at::Tensor& t) { return t.narrow(0, b, 1).narrow(1, start, end - start); };
      auto part = flash_attention(slice(q), slice(k), slice(v), causal);
      outs.push_back(part.out);
      lses.push_back(part.lse);
      start = end;
    }
    rows_out.push_back(at::cat(outs, 1));
    rows_lse.push_back(at::cat(lses, 2));
  }
  return {at::cat(rows_out, 0), at::cat(rows_lse, 0)};
}

}  // namespace lt

#include "core/attention/attention.h"

#include "core/attention/blockwise.h"
#include "core/attention/flash.h"
#include "core/util/error.h"

namespace lt {

namespace {

// The fused kernels take no index offsets: they fit when queries and keys are
// the same contiguous positions (self-attention of one block).
bool flash_fits(const at::Tensor& q, const at::Tensor& k, const AttentionMask& mask) {
  return flash_available(q) && !mask.has_indices() && q.size(1) == k.size(1);
}

// The spans of the queries' documents: the batch's when they cover these
// rows, else found from the ids now (ids on a device: a wait for it).
std::shared_ptr<const DocumentSpans> spans_of(const at::Tensor& q, const AttentionMask& mask) {
  if (mask.spans && spans_cover(*mask.spans, q)) return mask.spans;
  return document_spans(mask.q_document)->to(q.device());
}

}  // namespace

AttentionResult attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                          const AttentionOptions& options) {
  LT_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q, k, v must be [batch, seq, heads, head_dim]");
  LT_CHECK(q.size(2) % k.size(2) == 0, "attention: query heads must be a multiple of kv heads");
  const bool fits = flash_fits(q, k, mask);
  if (options.kernel == AttentionKernel::flash)
    LT_CHECK(fits,
             "attention: the flash kernel does not fit this case (offset positions, or fp32 on CUDA); "
             "use model.attention: auto");
  // Measured on CPU (tests/bench): the fused kernel, also per document
  // segment, beats the ATen blockwise kernel at every length we train at.
  if (options.kernel != AttentionKernel::blockwise && fits) {
    if (mask.has_documents()) return flash_attention_by_document(q, k, v, *spans_of(q, mask), mask.causal);
    return flash_attention(q, k, v, mask.causal);
  }
  return blockwise_attention(q, k, v, mask, options.block);
}

}  // namespace lt

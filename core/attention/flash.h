// LibTorch's fused flash-attention kernels (CPU, and CUDA for bf16/fp16).
// They return the log-sum-exp and have their own backward.
#pragma once
#include <array>

#include "core/attention/attention.h"
#include "core/attention/document_spans.h"

namespace lt {

// True when the fused kernel exists for this device and dtype.
bool flash_available(const at::Tensor& q);

// Plain causal (or full) attention. q, k, v: [batch, seq, heads, head_dim];
// k and v may have fewer heads (the kernels take grouped-query attention).
AttentionResult flash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal);

// Gradients of q, k and v of one plain call, given `out` and `lse` of q's
// rows, which may be those of a larger merged result (ring attention's, as
// ring-flash-attention does): each block of keys gets its share without
// recomputing the merge. lse [batch, heads, seq] fp32; the gradients of k
// and v have their heads.
std::array<at::Tensor, 3> flash_attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                                   bool causal);

// True when `spans` cut exactly the rows of q ([batch, seq, ...]).
bool spans_cover(const DocumentSpans& spans, const at::Tensor& q);

// Packed documents, each span attending only to itself: on CUDA one call of
// the variable-length kernel per layer; on CPU one fused call per span. The
// spans must cover q's rows exactly.
AttentionResult flash_attention_by_document(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const DocumentSpans& spans, bool causal);

// The variable-length kernel's log-sum-exp as [batch, heads, seq] fp32: it
// comes as [heads, tokens] (LibTorch 2.11's kernel) or, from older ones,
// padded per span as [spans, heads, longest].
at::Tensor lse_by_row(const at::Tensor& lse, const DocumentSpans& spans, int64_t batch);

}  // namespace lt

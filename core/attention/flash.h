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

// [batch, seq, heads, head_dim] -> the rows laid end to end, [batch * seq,
// heads, head_dim], as flash_varlen takes them.
at::Tensor laid_out(const at::Tensor& t);

// Sequences laid end to end, [tokens, heads, head_dim]: the queries of span
// i of q_spans attend only to the keys of span i of k_spans (a causal
// sequence must be square: CUDA's kernel aligns the mask to the bottom
// right, LibTorch's CPU kernel to the top left). On CUDA one call of the
// variable-length kernel; on CPU one fused call per sequence. lse [heads,
// tokens] fp32.
AttentionResult flash_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const DocumentSpans& q_spans, const DocumentSpans& k_spans, bool causal);

// Gradients of q, k and v of flash_varlen, given `out` and `lse` of q's
// tokens (those of a larger merged result, as flash_attention_backward).
std::array<at::Tensor, 3> flash_varlen_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                                const DocumentSpans& q_spans, const DocumentSpans& k_spans,
                                                bool causal);

// True when `spans` cut exactly the rows of q ([batch, seq, ...]).
bool spans_cover(const DocumentSpans& spans, const at::Tensor& q);

// Packed documents, each span attending only to itself (flash_varlen over
// the rows laid end to end). The spans must cover q's rows exactly.
AttentionResult flash_attention_by_document(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const DocumentSpans& spans, bool causal);

// The variable-length kernel's log-sum-exp as [heads, tokens] fp32: it comes
// so from LibTorch 2.11's kernel or, from older ones, padded per span as
// [spans, heads, longest].
at::Tensor lse_by_token(const at::Tensor& lse, const DocumentSpans& spans);

}  // namespace lt

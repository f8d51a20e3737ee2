// LibTorch's fused flash-attention kernels (CPU, and CUDA for bf16/fp16).
// They return the log-sum-exp and have their own backward.
#pragma once
#include "core/attention/attention.h"
#include "core/attention/document_spans.h"

namespace lt {

// True when the fused kernel exists for this device and dtype.
bool flash_available(const at::Tensor& q);

// Plain causal (or full) attention. q, k, v: [batch, seq, heads, head_dim], equal heads.
AttentionResult flash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal);

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

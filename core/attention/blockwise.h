// Flash-attention algorithm from ATen ops: online softmax over key blocks in
// the forward, per-block recomputation in the backward. Handles every mask
// (causal by global index, packed documents) and is differentiable through
// the log-sum-exp too, which ring attention's merge needs.
#pragma once
#include "core/attention/attention.h"

namespace lt {

// q, k, v: [batch, seq, heads, head_dim] with equal head counts.
AttentionResult blockwise_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const AttentionMask& mask, int64_t block);

}  // namespace lt

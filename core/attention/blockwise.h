// Flash-attention algorithm from ATen ops: online softmax over key blocks in
// the forward, per-block recomputation in the backward. Handles every mask
// (causal by global index, packed documents) and is differentiable through
// the log-sum-exp too.
#pragma once
#include <array>

#include "core/attention/attention.h"

namespace lt {

// q, k, v: [batch, seq, heads, head_dim]; k and v may have fewer heads
// (grouped-query attention).
AttentionResult blockwise_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const AttentionMask& mask, int64_t block);

// The same kernel without autograd, for callers that merge blocks of keys
// themselves (ring attention).
AttentionResult blockwise_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const AttentionMask& mask, int64_t block);

// Gradients of q, k and v given `out` and `lse` of q's rows, which may be
// those of a larger merged result: each block of keys then gets its share
// without recomputing the merge. `dlse` may be undefined.
std::array<at::Tensor, 3> blockwise_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout,
                                             const at::Tensor& dlse, const AttentionMask& mask, int64_t block);

}  // namespace lt

// One step of ring attention, without the ring: this rank's queries meet one
// K/V block, and the partial results are merged in fp32 by their log-sum-exp.
// With a fused kernel a step is at most two calls of flash_varlen (the
// block's full pieces, then its causal ones: ring_pieces.h), on CUDA one
// kernel launch each however many runs and documents there are; without one
// (fp32 on CUDA, or model.attention: blockwise), one blockwise call under the
// block's mask. Backward takes each call's gradients from the merged output
// and log-sum-exp (ring-flash-attention's way: no forward is recomputed).
#pragma once
#include "core/attention/attention.h"

namespace lt {

// One K/V block as it travels: keys, values ([batch, seq, kv_heads,
// head_dim]), their indices ([seq] int64, host) and documents ([batch, seq]
// int64, host; undefined: one document).
struct RingBlock {
  at::Tensor k, v, index, documents;
};

// This rank's queries and what each step's calls read besides the block.
struct RingQueries {
  at::Tensor q, index, documents;  // as RingBlock's
  bool causal, fused;              // fused: the flash kernels run (else the blockwise kernel)
  int64_t block;                   // the blockwise kernel's block
};

// The result merged so far, fp32 and token-major: out [batch * seq, heads,
// head_dim], lse [batch * seq, heads] (-inf: no key seen yet).
struct RingMerge {
  at::Tensor out, lse;
};
RingMerge ring_merge_start(const at::Tensor& q);
// out [batch, seq, heads, head_dim] in q's dtype, lse [batch, heads, seq] fp32.
AttentionResult ring_result(const RingMerge& merged, const at::Tensor& q);

void ring_forward_step(const RingQueries& in, const RingBlock& block, RingMerge& merged);

// Adds this block's share of the gradients to dq and to the block's dk and
// dv (fp32, their shapes), given the merged out and lse (ring_result's) and
// the gradient of out.
void ring_backward_step(const RingQueries& in, const RingBlock& block, const at::Tensor& out, const at::Tensor& lse,
                        const at::Tensor& dout, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv);

}  // namespace lt

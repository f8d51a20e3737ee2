// Ring attention (ring-flash-attention, TransformerEngine CP): each rank
// keeps its queries; the K/V blocks (with their token indices and document
// ids: only the kv heads travel) rotate around the ring, each step's transfer
// posted before the step's attention so the two overlap. Partial outputs are
// merged in fp32 by their log-sum-exp. A step (ring_step.h) meets a block
// with the fused kernels: its pieces (ring_pieces.h: per run of positions
// and document, keys before the queries full, the shared positions causal,
// keys after them skipped) laid end to end into at most two calls of the
// variable-length kernel, on CUDA one launch each under packed documents as
// without; or, where no fused kernel runs, with the blockwise kernel under
// the block's mask. Backward rotates K/V again with their dK/dV
// accumulators, which arrive home after a last hop; each call's gradients
// come from the merged output and log-sum-exp (ring-flash-attention's way:
// no forward is recomputed), so memory stays O(local sequence). With the
// zigzag layout every rank does the same causal work. Which calls to make is
// decided on the host, from host indices: no step waits for the device.
#pragma once
#include "core/attention/attention.h"
#include "parallel/comm/communicator.h"

namespace lt {

// Attention over the ring group `ring` (the layer's AttentionFn). q, k, v
// are this rank's tokens; mask.q_index gives their places in the sequence
// (undefined: 0..seq-1) and is also the keys' (self-attention).
AttentionFn ring_attention(Communicator& ring);

// Bytes one rank's forward sends per layer: R - 1 hops of its K/V block
// with the block's indices and (when masked) document ids.
int64_t ring_forward_bytes(int64_t batch, int64_t local_seq, int64_t kv_heads, int64_t head_dim, int ranks,
                           int64_t element_size, bool documents);

}  // namespace lt

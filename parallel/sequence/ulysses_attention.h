// DeepSpeed-Ulysses: each rank holds s/U tokens of every head; one fused
// all-to-all of q, k and v gives it all tokens of H/U heads, it attends, and
// the inverse all-to-all returns its tokens. Per rank and layer, forward
// sends (U-1)/U of its q, k, v and output: the 4Nh/U volume that stays
// constant when sequence and ranks grow together. With fewer kv heads than
// ranks (GQA), each kv head is replicated so every rank gets one; head
// counts the ranks do not divide split unevenly (uneven all-to-all).
#pragma once
#include "core/attention/attention.h"
#include "parallel/comm/communicator.h"

namespace lt {

// Attention over the Ulysses group `ulysses` (the layer's AttentionFn);
// `inner` attends over the gathered tokens (ring attention in the hybrid).
// The log-sum-exp is not sent back: the layer needs only the output.
AttentionFn ulysses_attention(Communicator& ulysses, AttentionFn inner = attention);

// Bytes one rank's forward all-to-alls send to other ranks per layer
// (heads that split evenly).
int64_t ulysses_forward_bytes(int64_t batch, int64_t local_seq, int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int ranks, int64_t element_size);

}  // namespace lt

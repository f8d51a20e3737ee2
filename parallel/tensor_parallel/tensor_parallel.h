// Megatron-style tensor parallelism, applied when the model is built for a
// rank: column-parallel q, k, v, gate, up and row-parallel o, down (the
// slices are the model's, core/model/llama.cpp), a vocabulary-parallel
// embedding and head, and the region edges between them:
//   plain:     enter = identity (backward: all-reduce), leave = all-reduce;
//   sequence:  enter = all-gather of the sequence (backward: reduce-scatter),
//              leave = reduce-scatter (backward: all-gather), so norms and
//              the residual stream hold 1/tp of the tokens.
// Per layer and micro-batch, forward moves 2 all-reduces (or 2 all-gathers
// + 2 reduce-scatters) of [batch, seq, hidden]: tp_forward_bytes.
#pragma once
#include "core/model/model_shard.h"
#include "core/model/loss.h"
#include "parallel/comm/communicator.h"

namespace lt {

// This tp rank's shard (whole model otherwise: set the stage fields too).
ModelShard tensor_parallel_shard(Communicator& tp, bool sequence);

// The vocabulary split of tp rank r holding rows [r * local_vocab, (r + 1) *
// local_vocab), its maxima and sums reduced over `tp`.
VocabSplit vocab_split(Communicator& tp, int64_t local_vocab);

// Summed cross-entropy over labels (kIgnoreIndex skipped) from this rank's
// vocabulary slice of the logits ([..., vocab / tp], labels [...]), without
// gathering them: the max, the sum of exponentials and the target logit are
// reduced over `tp`. Every tp rank returns the same loss; gradients flow to
// the local logits only.
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, Communicator& tp);

// Bytes one rank sends per layer and micro-batch in forward (ring
// all-reduce / all-gather / reduce-scatter: (tp-1)/tp of the data per
// reduce-scatter or all-gather phase).
int64_t tp_forward_bytes(int64_t batch, int64_t seq, int64_t hidden, int tp, int64_t element_size);

}  // namespace lt

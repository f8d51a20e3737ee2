// Which tokens of a sequence each sequence-parallel rank holds. The ring
// splits the sequence first: zigzag cuts it into 2R chunks and ring rank r
// holds chunks r and 2R-1-r (equal causal work on every rank), contiguous
// gives rank r the r-th R-th; then the ring rank's part is cut
// contiguously over the Ulysses ranks, in the order Ulysses' all-to-all
// gathers it back. Labels are shifted before sharding (by the packer), so
// every column carries its own token, label, position and document.
#pragma once
#include <ATen/ATen.h>

#include "core/data/batch.h"

namespace lt {

struct SequenceLayout {
  int ulysses = 1, ring = 1;
  bool zigzag = true;
  // Tensor-parallel ranks that cut each rank's part once more (Megatron's
  // sequence parallelism, inside the model): it must divide evenly too.
  int tp = 1;
};

// The columns (indices into the full sequence) rank (ulysses u, ring r)
// holds, in order: [length / (ulysses * ring)] int64.
at::Tensor sequence_columns(int64_t length, const SequenceLayout& layout, int u, int r);

// How many parts every sequence is cut into: a length must be a multiple.
int64_t sequence_parts(const SequenceLayout& layout);

// `length` rounded up to the next multiple of the parts.
int64_t padded_length(int64_t length, const SequenceLayout& layout);

// Pads every row at its end to padded_length, with ignored labels and a
// document of their own: under causal attention no real token sees them, so
// the loss and gradients are unchanged.
Batch pad_sequences(const Batch& batch, const SequenceLayout& layout);

// This rank's columns of every row; `index` says where they stand.
Batch shard_sequences(const Batch& batch, const at::Tensor& columns);

}  // namespace lt

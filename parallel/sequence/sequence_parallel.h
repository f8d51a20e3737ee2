// The attention a layer uses on this rank of the mesh: plain, Ulysses, ring,
// or the hybrid (Ulysses over adjacent ranks outside, ring inside), and the
// columns of each sequence this rank holds.
#pragma once
#include "core/attention/attention.h"
#include "core/config/config.h"
#include "parallel/mesh/mesh.h"
#include "parallel/sequence/sequence_shard.h"

namespace lt {

AttentionFn sequence_parallel_attention(Mesh& mesh);

SequenceLayout sequence_layout(const ParallelConfig& parallel);

// This rank's part of whole sequences (training and evaluation cut them
// alike): padded until the split is even, then its sp columns.
struct SequencePart {
  Batch batch;
  int64_t length;      // of the padded sequences
  at::Tensor columns;  // [batch's columns] their indices in the padded sequence
};
SequencePart sequence_part(const Batch& whole, const ParallelConfig& parallel, Mesh& mesh);

}  // namespace lt

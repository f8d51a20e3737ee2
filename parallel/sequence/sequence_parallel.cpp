#include "parallel/sequence/sequence_parallel.h"

#include "parallel/sequence/ring_attention.h"
#include "parallel/sequence/ulysses_attention.h"

namespace lt {

AttentionFn sequence_parallel_attention(Mesh& mesh) {
  const auto& d = mesh.layout().degrees();
  AttentionFn inner = d.ring > 1 ? ring_attention(mesh.group(Group::ring)) : AttentionFn(attention);
  return d.ulysses > 1 ? ulysses_attention(mesh.group(Group::ulysses), inner) : inner;
}

SequenceLayout sequence_layout(const ParallelConfig& p) {
  return {static_cast<int>(p.sp.ulysses), static_cast<int>(p.sp.ring), p.sp.zigzag,
          p.tp_sequence ? static_cast<int>(p.tp) : 1};
}

SequencePart sequence_part(const Batch& whole, const ParallelConfig& parallel, Mesh& mesh) {
  const auto layout = sequence_layout(parallel);
  SequencePart part{sequence_parts(layout) > 1 ? pad_sequences(whole, layout) : whole, 0, {}};
  part.length = part.batch.tokens.size(1);
  if (parallel.sp_degree() == 1) {
    part.columns = at::arange(part.length, at::kLong);
    return part;
  }
  const auto c = mesh.coord();
  part.columns = sequence_columns(part.length, layout, c.ulysses, c.ring);
  part.batch = shard_sequences(part.batch, part.columns);
  return part;
}

}  // namespace lt

#include "parallel/sequence/sequence_parallel.h"

#include "parallel/sequence/ring_attention.h"
#include "parallel/sequence/ulysses_attention.h"

namespace lt {

AttentionFn sequence_parallel_attention(Mesh& mesh) {
  const auto& d = mesh.layout().degrees();
  AttentionFn inner = d.ring > 1 ? ring_attention(mesh.group(Group::ring)) : AttentionFn(attention);
  return d.ulysses > 1 ? ulysses_attention(mesh.group(Group::ulysses), inner) : inner;
}

SequenceLayout sequence_layout(const SequenceParallelConfig& sp) {
  return {static_cast<int>(sp.ulysses), static_cast<int>(sp.ring), sp.zigzag};
}

}  // namespace lt

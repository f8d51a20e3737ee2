// The unit ZeRO shards in: a flat buffer of `numel` elements cut into one
// equal shard per replica (padded so that they divide it), shard r owned by
// replica r. The replica sets' buckets (parameter_state.h) and the
// offloaded chunks (offload/chunks) are both made of them, so padding, the
// reduction of gradients to their owners, the return of updated shards and
// the gathering of whole masters are written once.
#pragma once
#include <functional>
#include <vector>

#include "parallel/comm/communicator.h"

namespace lt {

struct FlatShards {
  FlatShards() = default;
  FlatShards(int64_t numel, const Communicator& replicas);

  int64_t numel = 0, padded = 0, shard = 0;
  int64_t first = 0;  // this rank's first element

  // This rank's shard of a whole (padded) buffer.
  at::Tensor mine(const at::Tensor& whole) const { return whole.narrow(0, first, shard); }
  // Starts the sum over `replicas` of the whole buffer `grads`: in place,
  // or with `owned` given only this rank's shard, into *owned (made here
  // when undefined).
  static Work reduce_async(Communicator& replicas, at::Tensor grads, at::Tensor* owned = nullptr);
  // After each rank updated its shard of `whole`: starts bringing every
  // rank's shard everywhere; `sent`, the copy of this rank's shard in
  // flight, must outlive the Work.
  Work share_updates(Communicator& replicas, at::Tensor whole, at::Tensor& sent) const;
};

// Runs `fn` with whole buffers gathered over `gathers` from every rank's
// `shards`, each handed to `point` (its index, the whole buffer); then,
// whether `fn` returned or threw, this rank's part of what `fn` left in
// them becomes its shard and `point` is handed an undefined tensor.
void with_whole(Communicator& gathers, const std::vector<at::Tensor>& shards,
                const std::function<void(size_t, const at::Tensor&)>& point, const std::function<void()>& fn);

}  // namespace lt

#include "parallel/data_parallel/flat_shards.h"

#include "core/util/scope_exit.h"

namespace lt {

FlatShards::FlatShards(int64_t n, const Communicator& replicas)
    : numel(n), padded((n + replicas.size() - 1) / replicas.size() * replicas.size()), shard(padded / replicas.size()),
      first(replicas.rank() * shard) {}

Work FlatShards::reduce_async(Communicator& replicas, at::Tensor grads, at::Tensor* owned) {
  if (!owned) return replicas.all_reduce_async(grads);
  if (!owned->defined()) *owned = at::empty({grads.numel() / replicas.size()}, grads.options());
  return replicas.reduce_scatter_async(grads, *owned);
}

Work FlatShards::share_updates(Communicator& replicas, at::Tensor whole, at::Tensor& sent) const {
  sent = mine(whole).clone();
  return replicas.all_gather_async(sent, whole);
}

void with_whole(Communicator& gathers, const std::vector<at::Tensor>& shards,
                const std::function<void(size_t, const at::Tensor&)>& point, const std::function<void()>& fn) {
  std::vector<at::Tensor> whole;
  for (const auto& s : shards) {
    whole.push_back(gathers.size() == 1 ? s : gathers.all_gather(s));
    point(whole.size() - 1, whole.back());
  }
  ScopeExit keep_shards([&] {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < shards.size(); ++i) {
      const int64_t n = shards[i].numel();
      shards[i].copy_(whole[i].narrow(0, gathers.rank() * n, n));
      point(i, at::Tensor());
    }
  });
  fn();
}

}  // namespace lt

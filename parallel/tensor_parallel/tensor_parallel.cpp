#include "parallel/tensor_parallel/tensor_parallel.h"

#include "core/model/loss.h"
#include "parallel/comm/autograd_collectives.h"

namespace lt {
namespace {

constexpr int64_t kSequenceDim = 1;  // activations are [batch, seq, hidden]

}  // namespace

ModelShard tensor_parallel_shard(Communicator& tp, bool sequence) {
  ModelShard shard;
  shard.tp_rank = tp.rank();
  shard.tp_size = tp.size();
  shard.tp_sequence = sequence && tp.size() > 1;
  if (tp.size() == 1) return shard;
  Communicator* comm = &tp;
  if (shard.tp_sequence) {
    shard.enter = [comm](const at::Tensor& x) { return all_gather(x, *comm, kSequenceDim); };
    shard.leave = [comm](const at::Tensor& x) { return reduce_scatter(x, *comm, kSequenceDim); };
  } else {
    shard.enter = [comm](const at::Tensor& x) { return copy_to_region(x, *comm); };
    shard.leave = [comm](const at::Tensor& x) { return reduce_from_region(x, *comm); };
  }
  return shard;
}

VocabSplit vocab_split(Communicator& tp, int64_t local_vocab) {
  return {[&tp](at::Tensor& t, bool max) { tp.all_reduce(t, max ? ReduceOp::max : ReduceOp::sum); },
          tp.rank() * local_vocab};
}

at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, Communicator& tp) {
  return cross_entropy_sum(logits, labels, vocab_split(tp, logits.size(-1)));
}

int64_t tp_forward_bytes(int64_t batch, int64_t seq, int64_t hidden, int tp, int64_t element_size) {
  if (tp == 1) return 0;
  // Two region exits per layer; an all-reduce is a reduce-scatter plus an
  // all-gather, each sending (tp-1)/tp of the tensor. With sequence
  // parallelism the two entries' all-gathers and the exits' reduce-scatters
  // move the same total.
  const int64_t tensor = batch * seq * hidden * element_size;
  return 2 * 2 * tensor * (tp - 1) / tp;
}

}  // namespace lt

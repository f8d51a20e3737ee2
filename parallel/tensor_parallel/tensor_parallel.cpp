#include "parallel/tensor_parallel/tensor_parallel.h"

#include <torch/autograd.h>

#include "core/data/batch.h"
#include "parallel/comm/autograd_collectives.h"

namespace lt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kSequenceDim = 1;  // activations are [batch, seq, hidden]

at::Tensor reduced(at::Tensor x, Communicator& comm, ReduceOp op) {
  x = x.contiguous();
  comm.all_reduce(x, op);
  return x;
}

struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels,
                            Communicator* tp) {
    const int64_t rows = logits.size(-1), offset = tp->rank() * rows;
    auto max = reduced(std::get<0>(logits.max(-1)), *tp, ReduceOp::max);
    auto exp = (logits - max.unsqueeze(-1)).exp();
    auto sum = reduced(exp.sum(-1), *tp, ReduceOp::sum);
    auto local = labels - offset;
    auto inside = local.ge(0).logical_and(local.lt(rows));
    auto index = local.clamp(0, rows - 1).unsqueeze(-1);
    auto target = reduced(logits.gather(-1, index).squeeze(-1) * inside, *tp, ReduceOp::sum);
    auto valid = labels.ne(kIgnoreIndex);
    auto loss = ((sum.log() + max - target) * valid).sum();
    exp.div_(sum.unsqueeze(-1));  // the softmax, kept for backward in place of the logits
    ctx->save_for_backward({exp, index, inside, valid});
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto grad = saved[0];
    grad.scatter_add_(-1, saved[1], -saved[2].to(grad.scalar_type()).unsqueeze(-1));
    grad.mul_((saved[3].to(grad.scalar_type()) * grads[0]).unsqueeze(-1));
    return {grad, {}, {}};
  }
};

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

at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, Communicator& tp) {
  return VocabParallelCrossEntropy::apply(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), labels.reshape({-1}),
                                          &tp);
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

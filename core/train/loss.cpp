#include "core/train/loss.h"

#include <torch/autograd.h>

namespace lt {

ModelInput model_input(const Batch& batch) {
  AttentionMask mask;
  mask.causal = true;
  mask.q_document = batch.documents;
  mask.k_document = batch.documents;
  mask.q_index = batch.index;
  mask.k_index = batch.index;
  return {batch.tokens, batch.positions, mask};
}

namespace {

void reduce(const VocabSplit& split, at::Tensor& t, bool max) {
  if (split.reduce) split.reduce(t, max);
}

// Forward keeps exp(logits - max) in fp32 and the row sums; backward turns
// them into the softmax times the incoming gradient, minus it at the
// labels, in one scaling pass and one cast.
struct CrossEntropy : torch::autograd::Function<CrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels,
                            const VocabSplit& split) {
    const int64_t rows = logits.size(-1);
    auto max = logits.amax(-1).to(at::kFloat).contiguous();
    reduce(split, max, true);
    // A copy in fp32, shifted and exponentiated in place (on CPU a
    // mixed-dtype subtraction costs more than the cast and two passes).
    auto exp = logits.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
    exp.sub_(max.unsqueeze(-1)).exp_();
    auto sum = exp.sum(-1).contiguous();
    reduce(split, sum, false);
    auto local = labels - split.offset;
    auto inside = local.ge(0).logical_and(local.lt(rows));
    auto index = local.clamp(0, rows - 1).unsqueeze(-1);
    auto target = (logits.gather(-1, index).squeeze(-1).to(at::kFloat) * inside).contiguous();
    reduce(split, target, false);
    auto valid = labels.ne(kIgnoreIndex);
    ctx->save_for_backward({exp, sum, index, inside, valid});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return ((sum.log() + max - target) * valid).sum();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto &grad = saved[0], &sum = saved[1], &index = saved[2], &inside = saved[3], &valid = saved[4];
    const auto scale = valid.to(at::kFloat) * grads[0];
    // (On CPU a mixed-dtype product or a bf16 scatter each cost a pass of
    // their own: scale in fp32, then cast once.)
    grad.mul_((scale / sum).unsqueeze(-1));
    grad.scatter_add_(-1, index, -(scale * inside).unsqueeze(-1));
    return {grad.to(static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt())), {}, {}};
  }
};

}  // namespace

at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& labels, const VocabSplit& split) {
  return CrossEntropy::apply(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}), split);
}

at::Tensor loss_sum(LlamaForCausalLMImpl& model, const Batch& batch) {
  return cross_entropy_sum(model.forward(model_input(batch)), batch.labels);
}

}  // namespace lt

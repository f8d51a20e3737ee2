#include "core/model/loss.h"

#include <torch/autograd.h>

#include <limits>

namespace lt {

ModelInput model_input(const Batch& batch) {
  AttentionMask mask;
  mask.causal = true;
  mask.q_document = batch.documents;
  mask.k_document = batch.documents;
  mask.q_index = batch.index;
  mask.k_index = batch.index;
  mask.spans = batch.spans;
  return {batch.tokens, batch.positions, mask};
}

namespace {

void reduce(const VocabSplit& split, at::Tensor& t, bool max) {
  if (split.reduce) split.reduce(t, max);
}

// Every row's loss from its logits (this rank's slice of the vocabulary):
// the shifted exponentials in fp32, their row sums and the label's logit,
// each completed over the split.
struct RowLosses {
  at::Tensor exp, sum, index, inside, valid;
  at::Tensor loss;  // [rows] fp32, 0 where the label is ignored
};

RowLosses row_losses(const at::Tensor& logits, const at::Tensor& labels, const VocabSplit& split) {
  const int64_t rows = logits.size(-1);
  RowLosses r;
  auto max = logits.amax(-1).to(at::kFloat).contiguous();
  reduce(split, max, true);
  // A copy in fp32, shifted and exponentiated in place (on CPU a
  // mixed-dtype subtraction costs more than the cast and two passes).
  r.exp = logits.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  r.exp.sub_(max.unsqueeze(-1)).exp_();
  r.sum = r.exp.sum(-1).contiguous();
  reduce(split, r.sum, false);
  auto local = labels - split.offset;
  r.inside = local.ge(0).logical_and(local.lt(rows));
  r.index = local.clamp(0, rows - 1).unsqueeze(-1);
  auto target = (logits.gather(-1, r.index).squeeze(-1).to(at::kFloat) * r.inside).contiguous();
  reduce(split, target, false);
  r.valid = labels.ne(kIgnoreIndex);
  r.loss = (r.sum.log() + max - target) * r.valid;
  return r;
}

// Forward keeps exp(logits - max) in fp32 and the row sums; backward turns
// them into the softmax times the incoming gradient, minus it at the
// labels, in one scaling pass and one cast.
struct CrossEntropy : torch::autograd::Function<CrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels,
                            const VocabSplit& split) {
    auto r = row_losses(logits, labels, split);
    ctx->save_for_backward({r.exp, r.sum, r.index, r.inside, r.valid});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return r.loss.sum();
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

TokenScores token_scores(const at::Tensor& logits, const at::Tensor& labels, const VocabSplit& split) {
  at::NoGradGuard no_grad;
  const auto flat = logits.reshape({-1, logits.size(-1)});
  TokenScores scores;
  scores.loss = row_losses(flat, labels.reshape({-1}), split).loss.view(labels.sizes());
  // The first index of the largest logit over the whole vocabulary, as one
  // rank's argmax: the smallest index among the ranks holding the maximum.
  auto [best, where] = flat.max(-1);
  best = best.to(at::kFloat);
  auto top = best.clone();  // a copy: the reduction is in place
  reduce(split, top, true);
  auto first = at::where(best.eq(top), -(where + split.offset), -std::numeric_limits<int64_t>::max()).contiguous();
  reduce(split, first, true);
  scores.predicted = first.neg().view(labels.sizes());
  return scores;
}

at::Tensor loss_sum(LlamaForCausalLMImpl& model, const Batch& batch) {
  return cross_entropy_sum(model.forward(model_input(batch)), batch.labels);
}

}  // namespace lt

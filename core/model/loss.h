// The language-model loss: summed cross-entropy over valid labels, so the
// caller can divide by the valid-token count of the whole global batch.
#pragma once
#include <functional>

#include "core/data/batch.h"
#include "core/model/llama.h"

namespace lt {

ModelInput model_input(const Batch& batch);

// A vocabulary split over ranks (tensor parallelism): this rank holds rows
// [offset, offset + logits' last size), and `reduce(t, max)` sums t over
// the ranks, or takes the maximum, in place. Default: the whole vocabulary.
struct VocabSplit {
  std::function<void(at::Tensor& t, bool max)> reduce;
  int64_t offset = 0;
};

// Summed cross-entropy of logits [..., vocab] (bf16 or fp32) against labels
// [...] (kIgnoreIndex skipped), an fp32 scalar computed in fp32 from the
// logits as they are, with a hand-written gradient (softmax - one-hot, in
// the logits' dtype) that costs about half the memory passes of
// log_softmax's. With a split, every rank returns the same loss and the
// gradient of its own slice, without gathering the logits.
at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& labels, const VocabSplit& split = {});

// What evaluation reads off a forward, per token: its loss (fp32, 0 where
// the label is ignored) and the model's choice, the argmax over the whole
// vocabulary (the first index of the largest logit). With a split, every
// rank gets both for the whole vocabulary. No gradient.
struct TokenScores {
  at::Tensor loss, predicted;  // shaped as the labels
};
TokenScores token_scores(const at::Tensor& logits, const at::Tensor& labels, const VocabSplit& split = {});

// Sum of token losses of a micro-batch (fp32 scalar).
at::Tensor loss_sum(LlamaForCausalLMImpl& model, const Batch& batch);

}  // namespace lt

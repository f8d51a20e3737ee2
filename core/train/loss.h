// The language-model loss: summed cross-entropy over valid labels, so the
// caller can divide by the valid-token count of the whole global batch.
#pragma once
#include "core/data/batch.h"
#include "core/model/llama.h"

namespace lt {

ModelInput model_input(const Batch& batch);

// Summed cross-entropy of logits [batch, seq, vocab] against labels (fp32 scalar).
at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& labels);

// Sum of token losses of a micro-batch (fp32 scalar).
at::Tensor loss_sum(LlamaForCausalLMImpl& model, const Batch& batch);

}  // namespace lt

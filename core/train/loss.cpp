#include "core/train/loss.h"

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

at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& labels) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), labels.reshape({-1}), {},
                                at::Reduction::Sum, kIgnoreIndex);
}

at::Tensor loss_sum(LlamaForCausalLMImpl& model, const Batch& batch) {
  return cross_entropy_sum(model.forward(model_input(batch)), batch.labels);
}

}  // namespace lt

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

at::Tensor loss_sum(LlamaForCausalLMImpl& model, const Batch& batch) {
  auto logits = model.forward(model_input(batch));
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), batch.labels.reshape({-1}), {},
                                at::Reduction::Sum, kIgnoreIndex);
}

}  // namespace lt

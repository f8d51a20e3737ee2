// Every count of the model's size in one place: the parameters a rank
// holds (the memory plan's), the parameters a token passes through and the
// FLOPs of training on it (MFU's).
#pragma once
#include <cstdint>

#include "core/config/config.h"

namespace lt {

// Parameters that are neither embeddings nor norms/biases, plus the head:
// the N of MFU's 6N (of a mixture of experts, the active ones).
int64_t flop_parameters(const ModelConfig& config);

// FLOPs of one trained token (forward + backward), docs/design.md's MFU formula.
double flops_per_token(const ModelConfig& model, int64_t seq_len);

// Parameters of one decoder layer held by one tensor-parallel rank, with
// `experts` experts in its MoE layers; averaged over the layers, so that a
// stage's layers sum to the right total.
int64_t layer_parameters(const ModelConfig& model, int tp, int64_t experts);

// The experts' parameters a rank holds out of `layer_parameters`, averaged
// over the layers the same way, with the experts split over `ep` ranks.
int64_t layer_expert_parameters(const ModelConfig& model, int ep);

}  // namespace lt

// Held-out loss / perplexity, and passkey retrieval accuracy at a context length.
#pragma once
#include "core/config/config.h"
#include "core/model/llama.h"

namespace lt {

struct LossResult {
  double loss = 0, perplexity = 0;
  int64_t tokens = 0;
};

struct PasskeyResult {
  double digit_accuracy = 0;  // share of answer digits predicted right
  double exact_match = 0;     // share of samples with every digit right (greedy retrieval)
  int64_t samples = 0;
  int64_t length = 0;
};

// One-line summaries, as the trainer and `longtrain eval` print them.
std::string describe(const LossResult& result);
std::string describe(const PasskeyResult& result, int64_t digits);

LossResult evaluate_loss(LlamaForCausalLMImpl& model, const Config& config, const at::Device& device);
PasskeyResult evaluate_passkey(LlamaForCausalLMImpl& model, const Config& config, int64_t length,
                               const at::Device& device);

}  // namespace lt

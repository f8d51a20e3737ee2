// Long-context evaluation: held-out loss (and by position in the sequence),
// and passkey retrieval at several context lengths and key depths.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/config/config.h"
#include "core/model/llama.h"

namespace lt {

struct LossResult {
  double loss = 0, perplexity = 0;
  int64_t tokens = 0;
  std::vector<double> by_position;  // mean loss per eval.position_buckets range of positions (NaN: no token there)
};

struct PasskeyResult {
  double digit_accuracy = 0;  // share of answer digits predicted right
  double exact_match = 0;     // share of samples with every digit right (greedy retrieval)
  int64_t samples = 0;
  int64_t length = 0;
  std::vector<double> exact_by_depth;  // per eval.passkey_depths depth (one: random depths)
};

struct EvalReport {
  std::optional<LossResult> loss;
  std::vector<PasskeyResult> passkey;  // one per length
};

// Ranks that share an evaluation, each with the whole model: rank `rank` of
// `size` runs every size-th batch from its own, and `sum` adds a tensor over
// them, so every rank gets the figures one rank alone would. Alone by default.
struct EvalShare {
  int rank = 0, size = 1;
  std::function<void(at::Tensor&)> sum = [](at::Tensor&) {};
  bool mine(int64_t batch) const { return batch % size == rank; }
};

LossResult evaluate_loss(LlamaForCausalLMImpl& model, const Config& config, const at::Device& device,
                         const EvalShare& share = {});
PasskeyResult evaluate_passkey(LlamaForCausalLMImpl& model, const Config& config, int64_t length,
                               const at::Device& device, const EvalShare& share = {});

// What the eval section asks for: the loss unless eval.sequences is 0, and
// for the passkey corpus retrieval at each of eval.passkey_lengths.
EvalReport evaluate(LlamaForCausalLMImpl& model, const Config& config, const at::Device& device,
                    const EvalShare& share = {});

// As the trainer and `longtrain eval` print it: the loss line, the loss by
// position, and a table of retrieval by length and depth.
std::string describe(const EvalReport& report, const Config& config);
nlohmann::json to_json(const EvalReport& report);

}  // namespace lt

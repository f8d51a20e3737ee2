// Long-context evaluation: held-out loss (and by position in the sequence),
// and passkey retrieval at several context lengths and key depths.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/config/config.h"
#include "core/data/batch.h"
#include "core/model/llama.h"
#include "core/model/loss.h"

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

// Runs a batch of whole sequences through the model, however it is laid
// out over the ranks taking part, and gives each of them every token's
// scores [rows, seq] (on the host).
using Scorer = std::function<TokenScores(const Batch& batch)>;

// The model whole on this rank, on `device`.
Scorer whole_model_scorer(LlamaForCausalLMImpl& model, const at::Device& device);

// Replicas of the model that share an evaluation: replica `rank` of `size`
// runs every size-th batch, and `sum` adds a tensor over the replicas, so
// every rank gets the figures one replica alone would. Under `lockstep` a
// replica runs as many forwards as the busiest one (repeating a batch whose
// scores it drops), as replicas whose forwards exchange rows must (expert
// parallelism). Alone by default.
struct EvalShare {
  int rank = 0, size = 1;
  std::function<void(at::Tensor&)> sum = [](at::Tensor&) {};
  bool lockstep = false;
  bool mine(int64_t batch) const { return batch % size == rank; }
  // Forwards beyond its own batches this replica runs out of `batches`.
  int64_t fillers(int64_t batches) const {
    return lockstep ? (batches + size - 1) / size - (batches - rank + size - 1) / size : 0;
  }
};

LossResult evaluate_loss(const Scorer& score, const Config& config, const EvalShare& share = {});
PasskeyResult evaluate_passkey(const Scorer& score, const Config& config, int64_t length, const EvalShare& share = {});

// What the eval section asks for: the loss unless eval.sequences is 0, and
// for the passkey corpus retrieval at each of eval.passkey_lengths.
EvalReport evaluate(const Scorer& score, const Config& config, const EvalShare& share = {});

// As the trainer and `longtrain eval` print it: the loss line, the loss by
// position, and a table of retrieval by length and depth.
std::string describe(const EvalReport& report, const Config& config);
nlohmann::json to_json(const EvalReport& report);

}  // namespace lt

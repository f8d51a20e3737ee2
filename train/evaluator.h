// Held-out evaluation during a run: when it is due (every eval.interval
// steps, and at the end when eval.at_end), and what becomes of its figures:
// the table in rank 0's log, the loss and passkey figures in metrics.jsonl,
// and the whole report with its step in eval.jsonl.
#pragma once
#include <map>
#include <optional>

#include "core/config/config.h"
#include "train/evaluate.h"
#include "train/metrics.h"

namespace lt {

struct TrainResult {
  std::map<int64_t, double> losses;  // 1-based step -> loss, for the steps this run trained
  std::optional<LossResult> eval;
  std::optional<PasskeyResult> passkey;
};

class Evaluator {
 public:
  Evaluator(const Config& config, Metrics& metrics, bool writes)
      : config_(config), metrics_(metrics), writes_(writes) {}

  // After step `step` (1-based): whether an evaluation runs between steps
  // (the last step's is the one at the end).
  bool due(int64_t step) const;
  bool at_end() const { return config_.eval.at_end; }

  // Evaluates with `score` over the ranks of `share` after step `step`,
  // reports the figures and keeps the last ones in `result`.
  void run(const Scorer& score, const EvalShare& share, int64_t step, TrainResult& result);

 private:
  const Config& config_;
  Metrics& metrics_;
  bool writes_;  // this rank writes eval.jsonl
};

}  // namespace lt

#include "train/evaluator.h"

#include "core/util/files.h"

namespace lt {

bool Evaluator::due(int64_t step) const {
  const auto& eval = config_.eval;
  return eval.interval > 0 && step % eval.interval == 0 && !(eval.at_end && step == config_.train.steps);
}

void Evaluator::run(const Scorer& score, const EvalShare& share, int64_t step, TrainResult& result) {
  const EvalReport report = evaluate(score, config_, share);
  std::string text = describe(report, config_);
  text.pop_back();  // the last newline: the logger adds its own
  metrics_.line(text);
  if (report.loss) {
    result.eval = report.loss;
    metrics_.record({{"step", step}, {"eval_loss", report.loss->loss}, {"eval_perplexity", report.loss->perplexity}});
  }
  if (!report.passkey.empty()) {
    result.passkey = report.passkey.back();
    metrics_.record({{"step", step},
                     {"passkey_length", result.passkey->length},
                     {"passkey_exact", result.passkey->exact_match},
                     {"passkey_digit_accuracy", result.passkey->digit_accuracy}});
  }
  auto record = to_json(report);
  record["step"] = step;
  if (writes_) append_line(config_.run_dir + "/eval.jsonl", record.dump());
}

}  // namespace lt

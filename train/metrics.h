// What a run tells the people and programs watching it, from rank 0: log
// lines (stdout and train.log) and one JSON record per logged step
// (metrics.jsonl). It formats the step line (throughput over the steps
// since the last one logged, MFU against the job's measured matrix-product
// peak, memory, ETA), and watches each step's outcome (loss_watch.h):
// skipped updates and loss spikes.
#pragma once
#include <memory>
#include <string>

#include "core/config/config.h"
#include "core/model/moe_balance.h"
#include "core/util/logger.h"
#include "train/loss_watch.h"

namespace lt {

// One trained step as the loop saw it.
struct StepOutcome {
  int64_t step = 0;  // 1-based
  int64_t length = 0;
  double loss = 0, lr = 0, grad_norm = 0, seconds = 0;
  bool skipped = false;     // no update: the loss or gradient norm was not finite, or no token had a label
  bool unlabelled = false;  // of those, no token of the step had a label
};

class Metrics {
 public:
  // `speaks`: this rank writes (rank 0); `append`: a resumed run continues
  // its files.
  Metrics(const Config& config, bool speaks, bool append);

  void line(const std::string& text) { logger_->line(text); }
  void record(const nlohmann::ordered_json& values) { logger_->metrics(values); }

  // Measures the job's peak (this rank's rate times `ranks`, in bf16 where
  // the device has bf16 units) and logs it; `first_step` is where the
  // steps counted for the ETA begin.
  void start(const at::Device& device, int ranks, int64_t first_step);

  // After each step: its outcome (throws past train.max_skipped_steps
  // skipped in a row), and at log.interval and the last step the step line
  // with the last step's MoE routing (`moe`, with a MoE model) and
  // `extra` (the adaptive plan).
  void step(const StepOutcome& outcome, const MoeStepStats& moe, const std::string& extra);

 private:
  void log_step(const StepOutcome& outcome, const MoeStepStats& moe, const std::string& extra);

  const Config& config_;
  std::unique_ptr<Logger> logger_;
  LossWatch watch_;
  at::Device device_ = at::kCPU;
  double peak_flops_ = 0, elapsed_ = 0, window_seconds_ = 0;
  int64_t window_tokens_ = 0, first_step_ = 0;
};

}  // namespace lt

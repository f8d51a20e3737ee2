// The single-process training loop: packed global batch -> micro-batches ->
// loss averaged over the valid tokens of the whole global batch -> clip ->
// AdamW -> log -> checkpoint; then held-out evaluation.
#pragma once
#include <map>
#include <memory>
#include <optional>

#include "core/checkpoint/checkpoint.h"
#include "core/config/config.h"
#include "core/train/evaluate.h"
#include "core/util/logger.h"

namespace lt {

struct TrainResult {
  std::map<int64_t, double> losses;  // 1-based step -> loss, for the steps this run trained
  std::optional<LossResult> eval;
  std::optional<PasskeyResult> passkey;
};

// FLOPs of one trained token (forward + backward), DESIGN.md's MFU formula.
double flops_per_token(const ModelConfig& model, int64_t seq_len);

// Runs a Config end to end. Throws lt::Error on user errors.
class Trainer {
 public:
  explicit Trainer(Config config);
  TrainResult run();

 private:
  double step(const Batch& batch, double lr, double& grad_norm);
  double clip_gradients();
  std::optional<std::string> resume_point() const;
  TrainState restore(const std::string& path);
  void log_step(int64_t step, int64_t length, double loss, double lr, double grad_norm, double seconds,
                int64_t tokens);
  void evaluate(TrainResult& result);

  Config config_;
  at::Device device_;
  LlamaForCausalLM model_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<Logger> logger_;
  CheckpointStore checkpoints_;
  double peak_flops_ = 0;
  double elapsed_ = 0;
  int64_t first_step_ = 0;
};

}  // namespace lt

// What the trainer watches in each step's loss: a non-finite loss or
// gradient norm skips the update (up to train.max_skipped_steps in a row,
// then the run stops), and a loss far above the recent ones is logged as a
// spike (Megatron and OLMo watch the same: spikes precede divergence).
#pragma once
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace lt {

class LossWatch {
 public:
  explicit LossWatch(int64_t max_skipped) : max_skipped_(max_skipped) {}

  // A skipped step (loss or gradient norm not finite): the message to log.
  // Throws when more than max_skipped steps in a row were skipped.
  std::string skipped(int64_t step, double loss, double grad_norm);
  // A step with no token to learn from, skipped: the message to log. It is
  // no sign of divergence, so it leaves the count of skips in a row alone.
  std::string unlabelled(int64_t step) const;
  // A step that updated: a message when its loss is a spike.
  std::optional<std::string> updated(int64_t step, double loss);

 private:
  int64_t max_skipped_;
  int64_t in_a_row_ = 0;
  std::deque<double> recent_;  // the last updated steps' losses
};

}  // namespace lt

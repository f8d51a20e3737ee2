#include "train/loss_watch.h"

#include <cmath>

#include "core/util/error.h"
#include "core/util/logger.h"

namespace lt {
namespace {

constexpr size_t kWindow = 32;  // steps the spike is judged against
constexpr size_t kMinimum = 8;  // before that many, no judgement
constexpr double kDeviations = 4;

std::string number(double value) {
  return std::isnan(value) ? "nan" : formatted("%.4g", value);  // nan whatever its sign bit
}

}  // namespace

std::string LossWatch::skipped(int64_t step, double loss, double grad_norm) {
  ++in_a_row_;
  const std::string what =
      "step " + std::to_string(step) + ": loss " + number(loss) + ", gradient norm " + number(grad_norm);
  if (in_a_row_ > max_skipped_)
    fail(what + ": " + std::to_string(in_a_row_) +
         " steps in a row without a finite loss and gradient "
         "(train.max_skipped_steps=" +
         std::to_string(max_skipped_) +
         "): lower train.lr, raise train.warmup_steps or check the data; resume from the last checkpoint");
  return what + ": update skipped (" + std::to_string(in_a_row_) + " in a row, at most " +
         std::to_string(max_skipped_) + ")";
}

std::string LossWatch::unlabelled(int64_t step) const {
  return "step " + std::to_string(step) +
         ": no token of the step has a label (documents of one token?): update skipped";
}

std::optional<std::string> LossWatch::updated(int64_t step, double loss) {
  in_a_row_ = 0;
  std::optional<std::string> spike;
  if (recent_.size() >= kMinimum) {
    double mean = 0, square = 0;
    for (double l : recent_) mean += l;
    mean /= static_cast<double>(recent_.size());
    for (double l : recent_) square += (l - mean) * (l - mean);
    // A floor on the spread: a flat stretch of losses makes no noise a spike.
    const double spread = std::max(std::sqrt(square / static_cast<double>(recent_.size())), 0.01 * std::abs(mean));
    if (loss > mean + kDeviations * spread)
      spike = "step " + std::to_string(step) + ": loss spike: " + number(loss) + " against " + number(mean) + " +- " +
              number(spread) + " over the last " + std::to_string(recent_.size()) + " steps";
  }
  recent_.push_back(loss);
  if (recent_.size() > kWindow) recent_.pop_front();
  return spike;
}

}  // namespace lt

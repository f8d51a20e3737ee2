#include "core/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace lt {

double learning_rate(const TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return t.lr * static_cast<double>(step + 1) / t.warmup_steps;
  const double last = static_cast<double>(t.steps - 1);
  auto fraction = [](double done, double span) { return span <= 0 ? 1.0 : std::clamp(done / span, 0.0, 1.0); };
  const double progress = fraction(step - t.warmup_steps, last - t.warmup_steps);
  if (t.schedule == Schedule::constant) return t.lr;
  if (t.schedule == Schedule::linear) return t.lr - (t.lr - t.min_lr) * progress;
  if (t.schedule == Schedule::cosine) return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  // wsd: stable at lr, then a linear decay over the last decay_fraction of the steps.
  const double decay_start = std::max<double>(t.warmup_steps, std::round(t.steps * (1.0 - t.decay_fraction)));
  if (step < decay_start) return t.lr;
  return t.lr - (t.lr - t.min_lr) * fraction(step - decay_start, last - decay_start);
}

}  // namespace lt

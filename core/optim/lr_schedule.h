// Learning rate at a (0-based) step: linear warmup, then constant, linear,
// cosine or WSD (warmup-stable-decay) down to min_lr at the last step.
#pragma once
#include <cstdint>

#include "core/config/config.h"

namespace lt {

double learning_rate(const TrainConfig& train, int64_t step);

}  // namespace lt

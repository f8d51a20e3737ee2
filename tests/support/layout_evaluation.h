// Evaluation on a job's own layout against the whole model on one rank.
#pragma once
#include "core/config/config.h"

namespace lt::testing {

// `config` laid out over the world (every rank its part of the model
// initialised from config.train.seed) scores every token as the whole model
// on one rank does: the loss within 1e-5, the argmax wherever it is decisive;
// and evaluate() reports the same figures, with the dp replicas sharing
// batches that do not divide evenly, passkey lengths padded for the
// sequence split. fp32.
void expect_layout_evaluation_equals_one_rank(Config config);

}  // namespace lt::testing

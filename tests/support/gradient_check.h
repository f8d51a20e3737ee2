// A parallel job's gradients against one rank's, at any ZeRO level.
#pragma once
#include "train/trainer.h"
#include "tests/support/reference.h"

namespace lt::testing {

// Every gradient this rank's optimizer updates (each replica set's
// segments: whole parameters, or under ZeRO its shards of them) against the
// same elements of `serial`'s full gradients, cut to this rank's tensor-
// parallel slice, after compute_gradients on both.
void expect_gradients_agree(Trainer& parallel, Trainer& serial, const Agreement& agreement);

}  // namespace lt::testing

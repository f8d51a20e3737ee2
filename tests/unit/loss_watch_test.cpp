// The trainer's watch over the loss: skipped steps counted in a row and
// refused past the limit with one actionable line; spikes found against the
// recent losses, flat stretches and ordinary noise not.
#include <gtest/gtest.h>

#include <cmath>

#include "train/loss_watch.h"
#include "core/util/error.h"

namespace lt {
namespace {

TEST(LossWatch, SkipsUpToTheLimitInARow) {
  LossWatch watch(2);
  const std::string first = watch.skipped(5, std::nan(""), 1.0);
  EXPECT_NE(first.find("step 5: loss nan, gradient norm 1: update skipped (1 in a row, at most 2)"), std::string::npos)
      << first;
  watch.updated(6, 3.0);  // resets the count
  watch.skipped(7, INFINITY, NAN);
  watch.skipped(8, NAN, NAN);
  try {
    watch.skipped(9, NAN, NAN);
    FAIL() << "a third skipped step in a row must stop the run";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("3 steps in a row"), std::string::npos) << message;
    EXPECT_NE(message.find("train.max_skipped_steps=2"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
}

TEST(LossWatch, FindsSpikesNotNoise) {
  LossWatch watch(0);
  int spikes = 0;
  for (int step = 1; step <= 40; ++step)  // a falling, noisy loss
    spikes += watch.updated(step, 3.0 - 0.01 * step + 0.02 * std::sin(step * 1.7)).has_value();
  EXPECT_EQ(spikes, 0);
  const auto spike = watch.updated(41, 4.0);
  ASSERT_TRUE(spike.has_value());
  EXPECT_NE(spike->find("step 41: loss spike: 4 against"), std::string::npos) << *spike;
  LossWatch flat(0);
  for (int step = 1; step <= 20; ++step) EXPECT_FALSE(flat.updated(step, 2.0 + (step == 20 ? 0.01 : 0)));
}

}  // namespace
}  // namespace lt

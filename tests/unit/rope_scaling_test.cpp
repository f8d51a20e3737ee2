// Each RoPE scaling type against its formula, written out per rotary pair
// with scalar arithmetic (HF transformers' modeling_rope_utils).
#include <gtest/gtest.h>

#include <cmath>

#include "core/model/rope.h"

namespace lt {
namespace {

ModelConfig model(const std::string& type, double theta, int64_t head_dim) {
  ModelConfig m;
  m.hidden_size = head_dim * 4;
  m.num_heads = 4;
  m.rope_theta = theta;
  m.rope.type = parse_choice<RopeType>(type);
  return m;
}

double base(int64_t i, int64_t dim, double theta) { return std::pow(theta, -2.0 * i / dim); }

void expect_frequencies(const RopeFrequencies& got, const std::function<double(int64_t)>& expected, int64_t dim) {
  ASSERT_EQ(got.inv_freq.numel(), dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i)
    EXPECT_NEAR(got.inv_freq[i].item<double>(), expected(i), 1e-12 * expected(i)) << "pair " << i;
}

TEST(RopeScaling, DefaultIsTheBaseFrequencies) {
  const auto m = model("default", 500000, 128);
  expect_frequencies(
      rope_frequencies(m), [](int64_t i) { return base(i, 128, 500000); }, 128);
  EXPECT_EQ(rope_frequencies(m).attention_factor, 1.0);
}

TEST(RopeScaling, LinearDividesByTheFactor) {
  auto m = model("linear", 10000, 64);
  m.rope.factor = 4;
  expect_frequencies(
      rope_frequencies(m), [](int64_t i) { return base(i, 64, 10000) / 4; }, 64);
}

// NTK: a larger base, theta * (f L / L0 - (f - 1))^(d / (d - 2)), at the
// model's length L; at or below L0 the frequencies are the base ones.
TEST(RopeScaling, DynamicRaisesTheBaseForTheModelLength) {
  auto m = model("dynamic", 10000, 64);
  m.rope.factor = 2;
  m.rope.original_max_seq_len = 1024;
  m.max_seq_len = 4096;
  const double theta = 10000 * std::pow(2.0 * 4096 / 1024 - 1, 64.0 / 62);
  expect_frequencies(
      rope_frequencies(m), [&](int64_t i) { return base(i, 64, theta); }, 64);
  m.max_seq_len = 1024;
  expect_frequencies(
      rope_frequencies(m), [](int64_t i) { return base(i, 64, 10000); }, 64);
}

// YaRN: pairs turning more than beta_fast times over L0 keep their
// frequency, fewer than beta_slow are divided by the factor, a linear ramp
// over the (floored, ceiled) dimensions between; cos and sin scaled by
// 0.1 ln(factor) + 1.
TEST(RopeScaling, YarnRampsFromExtrapolationToInterpolation) {
  const int64_t dim = 64;
  auto m = model("yarn", 10000, dim);
  m.rope.factor = 4;
  m.rope.original_max_seq_len = 2048;
  auto dimension = [&](double rotations) {
    return dim * std::log(2048 / (rotations * 2 * M_PI)) / (2 * std::log(10000.0));
  };
  const double low = std::max(0.0, std::floor(dimension(32))), high = std::min(dim - 1.0, std::ceil(dimension(1)));
  int extrapolated = 0, interpolated = 0, between = 0;
  auto expected = [&](int64_t i) {
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    return base(i, dim, 10000) / 4 * ramp + base(i, dim, 10000) * (1 - ramp);
  };
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    (ramp == 0 ? extrapolated : ramp == 1 ? interpolated : between)++;
  }
  EXPECT_GT(extrapolated, 0);
  EXPECT_GT(interpolated, 0);
  EXPECT_GT(between, 0);
  const auto got = rope_frequencies(m);
  expect_frequencies(got, expected, dim);
  EXPECT_DOUBLE_EQ(got.attention_factor, 0.1 * std::log(4.0) + 1);
  m.rope.attention_factor = 1.5;
  EXPECT_EQ(rope_frequencies(m).attention_factor, 1.5);

  // The factor scales cos and sin.
  RotaryEmbedding rope(got);
  const auto [cos, sin] = rope.cos_sin(at::tensor({3000L}, at::kLong).view({1, 1}));
  const double angle = 3000 * expected(5);
  EXPECT_NEAR(cos[0][0][5].item<double>(), std::cos(angle) * got.attention_factor, 1e-6);
  EXPECT_NEAR(sin[0][0][5 + dim / 2].item<double>(), std::sin(angle) * got.attention_factor, 1e-6);
}

// Llama 3.1: wavelengths longer than L0 / low_freq_factor are interpolated,
// shorter than L0 / high_freq_factor kept, smoothly between.
TEST(RopeScaling, Llama3InterpolatesOnlyTheLongWavelengths) {
  const int64_t dim = 128;
  auto m = model("llama3", 500000, dim);
  m.rope.factor = 8;
  m.rope.original_max_seq_len = 8192;
  m.rope.low_freq_factor = 1;
  m.rope.high_freq_factor = 4;
  int regimes[3] = {0, 0, 0};
  auto expected = [&](int64_t i) {
    const double f = base(i, dim, 500000), wavelength = 2 * M_PI / f;
    if (wavelength < 8192 / 4.0) return f;
    if (wavelength > 8192 / 1.0) return f / 8;
    const double smooth = (8192 / wavelength - 1) / (4 - 1);
    return (1 - smooth) * f / 8 + smooth * f;
  };
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double wavelength = 2 * M_PI / base(i, dim, 500000);
    regimes[wavelength < 2048 ? 0 : wavelength > 8192 ? 2 : 1]++;
  }
  EXPECT_GT(regimes[0], 0);
  EXPECT_GT(regimes[1], 0);
  EXPECT_GT(regimes[2], 0);
  expect_frequencies(rope_frequencies(m), expected, dim);
}

}  // namespace
}  // namespace lt

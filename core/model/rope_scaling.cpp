#include "core/model/rope_scaling.h"

#include <cmath>

namespace lt {
at::Tensor base_inv_freq(int64_t head_dim, double theta) {
  return at::pow(theta, at::arange(0, head_dim, 2, at::kDouble) / static_cast<double>(head_dim)).reciprocal();
}

namespace {

double yarn_mscale(double factor) { return factor <= 1 ? 1.0 : 0.1 * std::log(factor) + 1.0; }

// The dimension (in [0, d)) whose pair turns `rotations` times over `length`.
double yarn_dimension(double rotations, int64_t dim, double theta, double length) {
  return dim * std::log(length / (rotations * 2 * M_PI)) / (2 * std::log(theta));
}

RopeFrequencies yarn(const ModelConfig& m, int64_t dim) {
  const auto& r = m.rope;
  const double length = static_cast<double>(r.original_max_seq_len);
  const double low = std::max(std::floor(yarn_dimension(r.beta_fast, dim, m.rope_theta, length)), 0.0);
  double high = std::min(std::ceil(yarn_dimension(r.beta_slow, dim, m.rope_theta, length)), dim - 1.0);
  if (high == low) high += 0.001;
  const auto ramp = ((at::arange(dim / 2, at::kDouble) - low) / (high - low)).clamp(0, 1);
  // Pairs turning more than beta_fast times in L0 keep their frequency, those
  // turning fewer than beta_slow times are interpolated, linearly between.
  const auto base = base_inv_freq(dim, m.rope_theta);
  const auto inv_freq = base / r.factor * ramp + base * (1 - ramp);
  return {inv_freq, r.attention_factor > 0 ? r.attention_factor : yarn_mscale(r.factor)};
}

at::Tensor llama3(const ModelConfig& m, int64_t dim) {
  const auto& r = m.rope;
  const double length = static_cast<double>(r.original_max_seq_len);
  const auto inv_freq = base_inv_freq(dim, m.rope_theta);
  const auto wavelength = 2 * M_PI / inv_freq;
  const auto smooth = (length / wavelength - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
  const auto smoothed = (1 - smooth) * inv_freq / r.factor + smooth * inv_freq;
  const auto low = wavelength > length / r.low_freq_factor, high = wavelength < length / r.high_freq_factor;
  return at::where(low, inv_freq / r.factor, at::where(high, inv_freq, smoothed));
}

}  // namespace

RopeFrequencies rope_frequencies(const ModelConfig& m) {
  const int64_t dim = m.resolved_head_dim();
  const auto& r = m.rope;
  if (r.type == RopeType::linear) return {base_inv_freq(dim, m.rope_theta) / r.factor};
  if (r.type == RopeType::dynamic) {
    const double length = static_cast<double>(std::max(m.max_seq_len, r.original_max_seq_len));
    const double scale = r.factor * length / static_cast<double>(r.original_max_seq_len) - (r.factor - 1);
    return {base_inv_freq(dim, m.rope_theta * std::pow(scale, dim / (dim - 2.0)))};
  }
  if (r.type == RopeType::yarn) return yarn(m, dim);
  if (r.type == RopeType::llama3) return {llama3(m, dim)};
  return {base_inv_freq(dim, m.rope_theta)};
}

}  // namespace lt

#include "core/model/rope.h"

namespace lt {

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double theta)
    : RotaryEmbedding(RopeFrequencies{base_inv_freq(head_dim, theta)}) {}

RotaryEmbedding::RotaryEmbedding(RopeFrequencies frequencies)
    : inv_freq_(std::move(frequencies.inv_freq)), attention_factor_(frequencies.attention_factor) {}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::cos_sin(const at::Tensor& positions) const {
  // Angles in fp64 so positions in the millions keep their precision.
  auto inv = inv_freq_.to(positions.device());
  auto freqs = positions.to(at::kDouble).unsqueeze(-1) * inv;
  auto angles = at::cat({freqs, freqs}, -1);
  return {(angles.cos() * attention_factor_).to(at::kFloat), (angles.sin() * attention_factor_).to(at::kFloat)};
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  auto c = cos.unsqueeze(2).to(x.scalar_type()), s = sin.unsqueeze(2).to(x.scalar_type());
  return x * c + rotated * s;
}

}  // namespace lt

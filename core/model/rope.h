// Rotary position embedding in HF's rotate_half form, at arbitrary (global)
// positions, so a sequence shard rotates exactly as the whole sequence would.
#pragma once
#include <ATen/ATen.h>

#include "core/model/rope_scaling.h"

namespace lt {

class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, double theta);
  explicit RotaryEmbedding(RopeFrequencies frequencies);  // with model.rope's scaling

  // cos and sin for positions [batch, seq]: each [batch, seq, head_dim], fp32,
  // times the attention factor.
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& positions) const;

  const at::Tensor& inv_freq() const { return inv_freq_; }

 private:
  at::Tensor inv_freq_;  // [head_dim / 2], fp64 on the host
  double attention_factor_ = 1.0;
};

// x: [batch, seq, heads, head_dim]; x * cos + rotate_half(x) * sin.
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace lt

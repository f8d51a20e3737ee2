// RoPE scaling, as HF transformers' rope types compute it: the inverse
// frequencies of each rotary pair and the factor cos and sin are scaled by.
// A base change (ABF, Llama-2-Long, ProLong) is just a larger rope_theta.
#pragma once
#include <ATen/ATen.h>

#include "core/config/config.h"

namespace lt {

struct RopeFrequencies {
  at::Tensor inv_freq;            // [head_dim / 2], fp64 on the host
  double attention_factor = 1.0;  // cos and sin are multiplied by it (YaRN)
};

// theta^(-2i/d) for the d/2 rotary pairs: unscaled RoPE.
at::Tensor base_inv_freq(int64_t head_dim, double theta);

// default: theta^(-2i/d). linear: divided by factor (position interpolation).
// dynamic: NTK base theta * (factor L / L0 - (factor - 1))^(d / (d - 2)) at
// L = model.max_seq_len (HF recomputes it per sequence at inference; a run
// trains at one length). yarn: NTK-by-parts between interpolation and
// extrapolation, ramped over the dimensions rotating beta_slow..beta_fast
// times in L0, with attention factor 0.1 ln(factor) + 1 unless given.
// llama3: wavelengths above L0 / low_freq_factor interpolated, below
// L0 / high_freq_factor kept, smoothly in between.
RopeFrequencies rope_frequencies(const ModelConfig& model);

}  // namespace lt

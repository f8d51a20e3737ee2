// The one place where LibTorch version differences are gated. longtrain is
// written against LibTorch 2.x (PyPI's torch wheel); Debian's libtorch-dev
// 1.13 is the fallback where the wheel cannot be had, without the fused
// attention kernels (the blockwise kernel serves every case there).
#pragma once
#include <torch/version.h>

#define LT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

static_assert(LT_TORCH_AT_LEAST(1, 13), "longtrain needs LibTorch 2.x (or Debian's 1.13 as a fallback)");

// at::_scaled_dot_product_flash_attention_for_cpu and its backward.
#define LT_HAS_FUSED_FLASH_ATTENTION LT_TORCH_AT_LEAST(2, 2)

// The CUDA variable-length flash kernel's log-sum-exp is [heads, tokens], the
// layout its backward takes (2.11; older kernels pad it per sequence, and
// there flash_varlen_backward makes one call per sequence instead).
#define LT_VARLEN_LSE_BY_TOKEN LT_TORCH_AT_LEAST(2, 11)

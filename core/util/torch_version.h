// The one place where LibTorch version differences are gated.
#pragma once
#include <torch/version.h>

#define LT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||     \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

static_assert(TORCH_VERSION_MAJOR >= 2, "longtrain needs LibTorch 2.x");

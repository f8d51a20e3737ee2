#!/usr/bin/env bash
# Configures and builds longtrain into build/ (build/longtrain is the program).
set -euo pipefail
cd "$(dirname "$0")/.."
# LibTorch from LT_TORCH_PREFIX (a LibTorch of your own: the folder holding
# share/cmake/Torch), else from the torch wheel of the python3 on PATH (a
# virtual environment's, when one is active); without one (or with
# LT_TORCH=debian) CMake finds Debian's libtorch-dev in the system paths.
prefix=${LT_TORCH_PREFIX:-}
if [ -z "$prefix" ] && [ "${LT_TORCH:-wheel}" != "debian" ]; then
  prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
fi
build=${LT_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DLT_WERROR=ON > build.configure.log 2>&1 ||
  { cat build.configure.log; exit 1; }
grep "longtrain:" build.configure.log || true
cmake --build "$build" -j "$(nproc)" "$@"

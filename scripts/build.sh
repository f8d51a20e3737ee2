#!/usr/bin/env bash
# Configures and builds longtrain into build/ (build/longtrain is the program).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" > build.configure.log 2>&1 ||
  { cat build.configure.log; exit 1; }
grep "longtrain:" build.configure.log || true
cmake --build build -j "$(nproc)" "$@"

#!/usr/bin/env bash
# Builds the unit and multi-rank tests under AddressSanitizer and
# UndefinedBehaviorSanitizer (build-sanitize/, at -O0: see CMakeLists.txt) and
# runs them through ctest as scripts/test.sh does: the unit tests' shards,
# the parser fuzzers among them (LT_FUZZ_INPUTS mutations per parser), and
# the 2-rank MPI tests. Any sanitizer report fails the run. LibTorch and
# OpenMPI are not instrumented; their memory held until exit is not reported
# (detect_leaks=0). CI (.ci/run) runs it on every submission.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
build=${LT_SANITIZE_DIR:-build-sanitize}
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DLT_SANITIZE=ON -DCMAKE_PREFIX_PATH="$prefix" \
  > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target lt_unit_tests lt_mpi_tests
export LT_FUZZ_INPUTS=${LT_FUZZ_INPUTS:-10000}
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=23
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=23
cd "$build"
ctest --output-on-failure --no-tests=error --timeout 900 -j "$(nproc)" -R '^(unit\.shard[0-9]+|mpi\.np2)$'
echo "sanitize: unit and 2-rank MPI tests ran with no AddressSanitizer or UndefinedBehaviorSanitizer report"

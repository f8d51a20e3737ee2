#!/usr/bin/env bash
# Sets up, builds and runs every test (unit, multi-process, command line)
# through ctest. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/build.sh
cd "${LT_BUILD_DIR:-build}"
# The unit tests' shards side by side (each runs one test at a time, mostly
# on one core); the tests of whole jobs (tests/cli, tests/mpi) run alone
# (RUN_SERIAL), since each uses every core.
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"

#!/usr/bin/env bash
# Sets up, builds and runs every test (unit, multi-process, command line)
# through ctest. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/build.sh
cd "${LT_BUILD_DIR:-build}"
# One test at a time: each uses every core.
ctest --output-on-failure --timeout 900 "$@"

#!/usr/bin/env bash
# The main job: a tiny Llama learns passkey retrieval at 1K tokens from the
# built-in synthetic corpus, on CPU, in a few minutes. Extra arguments are
# recipe overrides (e.g. train.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --target longtrain
exec build/longtrain train recipes/tiny-passkey.yaml "$@"

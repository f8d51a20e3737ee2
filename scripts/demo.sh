#!/usr/bin/env bash
# The main job: context extension end to end on CPU with the built-in
# passkey corpus, in about six minutes. A tiny Llama is pretrained at 128
# tokens and exported to Hugging Face format; that model, its RoPE base
# raised 16x, is trained briefly at 1024 tokens; passkey retrieval by length
# and depth is printed before and after, and the result is exported again.
# Extra arguments are overrides for both runs (e.g. train.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --target longtrain
lt=build/longtrain
short=runs/tiny-passkey-short
long=runs/tiny-passkey-extension
# The demo starts from nothing each time: a run refuses a run directory that
# holds another run's checkpoints, so the demo's own are cleared first.
rm -rf "$short" "$long"

echo "== stage 1: pretrain at 128 tokens (recipes/tiny-passkey-short.yaml)"
$lt train recipes/tiny-passkey-short.yaml "$@"
rm -rf "$short/hf"
$lt export "$short" --hf "$short/hf" --dtype float32

echo "== before extension: the pretrained model (RoPE base 10000) at 128 to 1024 tokens"
$lt eval recipes/tiny-passkey-extension.yaml eval.sequences=0 model.rope_theta=10000 \
  --output "$short/eval_before_extension.jsonl" "$@"

echo "== stage 2: extend to 1024 tokens from the HF export (recipes/tiny-passkey-extension.yaml)"
$lt train recipes/tiny-passkey-extension.yaml "$@"
rm -rf "$long/hf"
$lt export "$long" --hf "$long/hf"

echo "== figures: loss (both stages overlaid), learning rate, gradient norm, tokens/s, passkey table"
python3 scripts/plot.py "$long" "$short"
echo "== the same figures live: tensorboard --logdir runs (both runs wrote their events to runs/*/tb)"

# The context-extension workflow through the program: a run exported to HF
# format evaluates as its checkpoint does, a new run starts from it
# (init.from_hf) with the RoPE base changed, and its export carries the new base.
source "$(dirname "$0")/lib.sh"
run="$LT_TEST_DIR/cli_hf"
rm -rf "$run" "$run.hf" "$run.extended" "$run.extended.hf" "$run.bf16"

"$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" run_dir="$run" > "$run.out"
"$LONGTRAIN" export "$run" --hf "$run.hf" --dtype float32 --shard-gb 0.001 > "$run.export"
[ -f "$run.hf/config.json" ] && [ -f "$run.hf/model.safetensors.index.json" ] || fail "export incomplete: $(ls "$run.hf")"
expect_error "already exists" "$LONGTRAIN" export "$run" --hf "$run.hf"
expect_error "export: missing --hf OUT" "$LONGTRAIN" export "$run"
expect_error "--shard-gb 'x' must be a number of GB from 0.001 to 1000000" "$LONGTRAIN" export "$run" --hf "$run.x" --shard-gb x
expect_error "--dtype float8 is not one of bfloat16, float16, float32" "$LONGTRAIN" export "$run" --hf "$run.x" --dtype float8

# The same weights, the same held-out loss.
"$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$run/checkpoints" "${SHORT[@]}" > "$run.eval_checkpoint"
"$LONGTRAIN" eval recipes/tiny-passkey.yaml "${SHORT[@]}" init.from_hf="$run.hf" "model.preset=''" > "$run.eval_hf"
want=$(grep "^eval: loss " "$run.eval_checkpoint")
got=$(grep "^eval: loss " "$run.eval_hf")
[ -n "$want" ] && [ "$want" = "$got" ] || fail "HF eval '$got' differs from the checkpoint's '$want'"

# Extend: a new base, the model from the export; the result goes back out,
# carrying the tokenizer and generation files the export started from.
printf '{"version": "1.0"}\n' > "$run.hf/tokenizer.json"
printf '{"eos_token_id": 2}\n' > "$run.hf/generation_config.json"
"$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" run_dir="$run.extended" init.from_hf="$run.hf" \
  "model.preset=''" model.rope_theta=80000 data.seq_len=512 data.passkey.max_doc_len=512 \
  "eval.passkey_lengths=[256,512]" eval.passkey_depths=2 checkpoint.export_hf=float32 > "$run.extended.out"
grep -q "initialized from $run.hf" "$run.extended.out" || fail "did not start from the HF model"
grep -q "passkey exact match by depth of the key" "$run.extended.out" || fail "no passkey table"
[ "$(wc -l < "$run.extended/eval.jsonl")" -eq 1 ] || fail "eval.jsonl: $(cat "$run.extended/eval.jsonl")"
"$LONGTRAIN" export "$run.extended" --hf "$run.extended.hf" --dtype float32 > /dev/null
grep -q '"rope_theta": 80000.0' "$run.extended.hf/config.json" || fail "export lost the new base"
# checkpoint.export_hf wrote the same at the end of training.
cmp -s "$run.extended/hf/model.safetensors" "$run.extended.hf/model.safetensors" || fail "end-of-run export differs"
cmp -s "$run.extended/hf/config.json" "$run.extended.hf/config.json" || fail "end-of-run config.json differs"
for file in tokenizer.json generation_config.json; do
  cmp -s "$run.hf/$file" "$run.extended/hf/$file" && cmp -s "$run.hf/$file" "$run.extended.hf/$file" ||
    fail "the exports lack init.from_hf's $file: $(ls "$run.extended/hf" "$run.extended.hf")"
done
[ ! -e "$run.hf/tokenizer_config.json" ] && [ ! -e "$run.extended.hf/tokenizer_config.json" ] || fail "copied a file that is not there"
rm -rf "$run.bf16"
"$LONGTRAIN" export "$run" --hf "$run.bf16" > /dev/null
grep -q '"torch_dtype": "bfloat16"' "$run.bf16/config.json" || fail "default dtype"

expect_error "init.from_hf takes the model from" "$LONGTRAIN" train recipes/tiny-passkey.yaml init.from_hf="$run.hf"
expect_error "config.json: cannot open" "$LONGTRAIN" eval recipes/tiny-passkey.yaml init.from_hf="$run.missing" \
  "model.preset=''"
echo "hf round trip ok"

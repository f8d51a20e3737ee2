# train -> metrics.jsonl, TensorBoard events and a checkpoint -> eval on it -> plots -> resume continues.
source "$(dirname "$0")/lib.sh"
run="$LT_TEST_DIR/cli_train"
rm -rf "$run" "$run.noeval"

"$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" run_dir="$run" checkpoint.interval=2 log.tensorboard=true \
  > "$run.out"
grep -q "step 4/4 | seq 256 | loss" "$run.out" || fail "no progress line"
grep -q "passkey retrieval at 256 tokens" "$run.out" || fail "no passkey accuracy"
[ "$(wc -l < "$run/metrics.jsonl")" -ge 4 ] || fail "metrics.jsonl too short"
for key in step loss lr grad_norm tokens_per_s; do
  head -1 "$run/metrics.jsonl" | grep -q "\"$key\"" || fail "metrics.jsonl lacks $key"
done
[ -f "$run/config.yaml" ] && [ -f "$run/train.log" ] || fail "run directory incomplete"
[ -f "$run/checkpoints/step_00000004/manifest.json" ] || fail "no final checkpoint"

"$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$run/checkpoints" "${SHORT[@]}" > "$run.eval"
grep -q "step_00000004" "$run.eval" && grep -q "eval: loss" "$run.eval" || fail "eval output: $(cat "$run.eval")"
# Its figures at full precision in a JSON line: by default in run_dir/eval.jsonl
# (after the training's own end-of-run line), or in --output.
evals=$(wc -l < "$run/eval.jsonl")
"$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$run/checkpoints" "${SHORT[@]}" run_dir="$run" > /dev/null
[ "$(wc -l < "$run/eval.jsonl")" -eq $((evals + 1)) ] || fail "longtrain eval did not append to run_dir/eval.jsonl"
"$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$run/checkpoints" "${SHORT[@]}" --output "$run/out/e.jsonl" \
  > "$run.eval2"
printed=$(sed -n 's/^eval: loss \([0-9.]*\) .*/\1/p' "$run.eval2")
python3 - "$run/out/e.jsonl" "$printed" "$(tail -1 "$run/eval.jsonl")" <<'PY' || fail "eval.jsonl: $(cat "$run/out/e.jsonl")"
import json, sys
record = json.loads(open(sys.argv[1]).read())
assert record["step"] == 4 and record["checkpoint"].endswith("step_00000004"), record
assert f"{record['loss']['loss']:.4f}" == sys.argv[2] and len(repr(record["loss"]["loss"])) > 8, record["loss"]["loss"]
assert record["loss"] == json.loads(sys.argv[3])["loss"], "differs from the default file's line"
assert record["loss"]["by_position"] and record["passkey"][0]["length"] == 256, record
PY

# scripts/plot.py draws the run's figures into it; a folder that is no run is one line.
python3 scripts/plot.py "$run" > "$run.plot"
for png in loss training eval passkey; do
  [ "$(head -c 8 "$run/$png.png" | od -An -tx1 | tr -d ' ')" = "89504e470d0a1a0a" ] || fail "no $png.png: $(cat "$run.plot")"
done
expect_error "no metrics.jsonl with steps" python3 scripts/plot.py "$run/checkpoints"
# A run without evaluation still plots its training; the eval figures are skipped, saying so.
"$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" train.steps=2 eval.at_end=false run_dir="$run.noeval" \
  > /dev/null
python3 scripts/plot.py "$run.noeval" > "$run.noeval.plot" || fail "plot without eval: $(cat "$run.noeval.plot")"
[ -f "$run.noeval/loss.png" ] && [ -f "$run.noeval/training.png" ] && [ ! -f "$run.noeval/eval.png" ] ||
  fail "plot without eval: $(cat "$run.noeval.plot")"
grep -q "passkey.png.*no passkey evaluation" "$run.noeval.plot" || fail "no skip line: $(cat "$run.noeval.plot")"

# Resuming a finished run at a longer schedule continues from step 4.
"$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" run_dir="$run" checkpoint.resume=auto train.steps=6 \
  log.tensorboard=true > "$run.resume"
grep -q "resumed from .*step_00000004 at step 4" "$run.resume" || fail "did not resume"
grep -q "step 5/6" "$run.resume" && ! grep -q "step 1/6" "$run.resume" || fail "resume restarted"
# TensorBoard, reading both runs' event files, shows every metrics.jsonl figure (eval's too).
python3 tests/oracle/tensorboard_read.py "$run" > "$run.tb" 2>&1 || fail "TensorBoard events: $(cat "$run.tb")"
grep -q "equal to metrics.jsonl" "$run.tb" || fail "TensorBoard check printed: $(cat "$run.tb")"
echo "train, eval and resume ok"

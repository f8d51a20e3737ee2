# Faults a long run meets, as a user sees them (LT_FAULT injects them): a
# crashed rank ends the job quickly and non-zero, and the next job repeats
# the uninterrupted losses from the last checkpoint; a NaN step is skipped
# on every rank and logged, or ends the run past train.max_skipped_steps; a
# full disk during a checkpoint leaves the previous one the latest; a
# SIGTERM (to one process) or SIGUSR1 (to one rank of two) saves a
# checkpoint at the next step boundary and exits 0, and the next job
# resumes from it.
source "$(dirname "$0")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe --bind-to none)
dir="$LT_TEST_DIR/cli_faults"
rm -rf "$dir"
mkdir -p "$dir"
ARGS=(recipes/tiny-passkey.yaml "${SHORT[@]}" eval.at_end=false train.threads=1)

# The uninterrupted run that restarts must reproduce.
CKPT=(train.steps=6 checkpoint.interval=2 parallel.zero=1)
"${MPIRUN[@]}" -np 2 "$LONGTRAIN" train "${ARGS[@]}" "${CKPT[@]}" run_dir="$dir/straight" > /dev/null
# Losses of steps $2.. in run directory $1 (a resumed run's lines come last) equal the uninterrupted run's.
same_losses() {
  python3 - "$dir/straight/metrics.jsonl" "$1/metrics.jsonl" "$2" <<'PY' || fail "$1: resumed losses differ"
import json, sys
straight, run = ({json.loads(l)["step"]: json.loads(l)["loss"] for l in open(f) if '"loss"' in l} for f in sys.argv[1:3])
steps = range(int(sys.argv[3]), 7)
assert all(run[s] == straight[s] for s in steps), (straight, run)
print("ok: losses of steps", list(steps), "equal the uninterrupted run exactly:", [run[s] for s in steps])
PY
}

# Rank 1 dies in step 5 without a word: the job ends quickly and non-zero;
# the next job resumes from step 4's checkpoint and repeats the losses.
start=$(date +%s)
status=0
LT_FAULT=exit@1:5 timeout 120 "${MPIRUN[@]}" -q -x LT_FAULT -np 2 "$LONGTRAIN" train "${ARGS[@]}" "${CKPT[@]}" \
  run_dir="$dir/crash" > /dev/null 2> "$dir/crash.err" || status=$?
elapsed=$(( $(date +%s) - start ))
[ "$status" -ne 0 ] && [ "$status" -ne 124 ] || fail "a crashed rank left exit $status"
[ "$elapsed" -lt 30 ] || fail "the job took ${elapsed}s to end after a crash"
echo "ok: a crashed rank ended the job, exit $status, ${elapsed}s from launch"
"${MPIRUN[@]}" -np 2 "$LONGTRAIN" train "${ARGS[@]}" "${CKPT[@]}" checkpoint.resume=auto run_dir="$dir/crash" > "$dir/crash2.out"
grep -q "resumed from .*step_00000004 at step 4" "$dir/crash2.out" || fail "no resume at step 4: $(head -3 "$dir/crash2.out")"
same_losses "$dir/crash" 5

# NaN on rank 1 at step 2: both ranks skip the update and go on.
LT_FAULT=nan@1:2 "${MPIRUN[@]}" -x LT_FAULT -np 2 "$LONGTRAIN" train "${ARGS[@]}" run_dir="$dir/nan" > "$dir/nan.out"
grep -q "step 2: loss nan, gradient norm nan: update skipped (1 in a row, at most 3)" "$dir/nan.out" ||
  fail "no skip logged: $(cat "$dir/nan.out")"
grep -q '"step":2,"skipped":true' "$dir/nan/metrics.jsonl" || fail "no skip in metrics.jsonl"
grep -q "^step 4/4 | seq 256 | loss [0-9]" "$dir/nan.out" || fail "the run did not go on: $(cat "$dir/nan.out")"
echo "ok: $(grep 'update skipped' "$dir/nan.out")"
expect_error "1 steps in a row without a finite loss and gradient (train.max_skipped_steps=0)" \
  env LT_FAULT=nan@0:2 "$LONGTRAIN" train "${ARGS[@]}" train.max_skipped_steps=0 run_dir="$dir/nan_stop"
# Every rank of a job meets that error: one line, from rank 0.
status=0
LT_FAULT=nan@0:2 timeout 120 "${MPIRUN[@]}" -q -x LT_FAULT -np 2 "$LONGTRAIN" train "${ARGS[@]}" \
  train.max_skipped_steps=0 run_dir="$dir/nan_stop_job" > /dev/null 2> "$dir/nan_stop_job.err" || status=$?
[ "$status" -ne 0 ] && [ "$status" -ne 124 ] || fail "an error every rank met left exit $status"
[ "$(grep -c 'longtrain: error' "$dir/nan_stop_job.err")" -eq 1 ] &&
  grep -q "longtrain: error on rank 0: step 2: loss nan" "$dir/nan_stop_job.err" ||
  fail "not one line from rank 0: $(cat "$dir/nan_stop_job.err")"
echo "ok: an error both ranks met: $(grep -c 'longtrain: error' "$dir/nan_stop_job.err") line, exit $status"

# A full disk while rank 1 writes its part of step 4's checkpoint: the job
# ends naming the file and the reason; step 2's checkpoint stays the latest;
# the next job removes the partial one, resumes at step 2 and repeats the
# uninterrupted run's losses exactly.
status=0
LT_FAULT=diskfull@1:4 "${MPIRUN[@]}" -q -x LT_FAULT -np 2 "$LONGTRAIN" train "${ARGS[@]}" "${CKPT[@]}" \
  run_dir="$dir/full" > /dev/null 2> "$dir/full.err" || status=$?
[ "$status" -ne 0 ] || fail "a failed checkpoint write left exit 0"
grep -q "longtrain: error on rank 1: .*/step_00000004.tmp/optimizer.00001.safetensors: write failed: No space left on device" \
  "$dir/full.err" || fail "full disk: $(cat "$dir/full.err")"
[ -f "$dir/full/checkpoints/step_00000002/manifest.json" ] && [ ! -e "$dir/full/checkpoints/step_00000004" ] ||
  fail "full disk: checkpoints $(ls "$dir/full/checkpoints")"
"${MPIRUN[@]}" -np 2 "$LONGTRAIN" train "${ARGS[@]}" "${CKPT[@]}" checkpoint.resume=auto run_dir="$dir/full" > "$dir/full2.out"
grep -q "resumed from .*step_00000002 at step 2" "$dir/full2.out" || fail "no resume at step 2: $(head -3 "$dir/full2.out")"
[ ! -e "$dir/full/checkpoints/step_00000004.tmp" ] || fail "the partial checkpoint is still there"
same_losses "$dir/full" 3

# Waits until run directory $1 has logged step $2.
wait_for_step() {
  for _ in $(seq 600); do
    grep -q "\"step\":$2," "$1/metrics.jsonl" 2> /dev/null && return 0
    sleep 0.1
  done
  fail "step $2 never came in $1"
}

# SIGTERM to a single process: checkpoint, exit 0; the next job resumes there.
"$LONGTRAIN" train "${ARGS[@]}" train.steps=500 run_dir="$dir/term" > "$dir/term.out" &
pid=$!
wait_for_step "$dir/term" 2
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "SIGTERM: exit $status: $(tail -3 "$dir/term.out")"
step=$(grep -o "received Terminated: stopped after step [0-9]*" "$dir/term.out" | grep -o "[0-9]*$") ||
  fail "SIGTERM: no stop logged: $(tail -3 "$dir/term.out")"
[ -f "$dir/term/checkpoints/$(printf 'step_%08d' "$step")/manifest.json" ] || fail "no checkpoint at step $step"
"$LONGTRAIN" train "${ARGS[@]}" train.steps=$((step + 2)) checkpoint.resume=auto run_dir="$dir/term" > "$dir/term2.out"
grep -q "resumed from .*step_$(printf '%08d' "$step") at step $step" "$dir/term2.out" ||
  fail "no resume at step $step: $(head -3 "$dir/term2.out")"
echo "ok: SIGTERM stopped after step $step with its checkpoint; the next job resumed there"

# SIGUSR1 to rank 1 of 2 only: the ranks agree and stop after the same step.
"${MPIRUN[@]}" -np 2 "$LONGTRAIN" train "${ARGS[@]}" train.steps=500 run_dir="$dir/usr1" > "$dir/usr1.out" &
job=$!
wait_for_step "$dir/usr1" 2
for p in $(pgrep -f "longtrain train .*run_dir=$dir/usr1"); do
  if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then kill -USR1 "$p"; fi
done
status=0
wait "$job" || status=$?
[ "$status" -eq 0 ] || fail "SIGUSR1: exit $status: $(tail -3 "$dir/usr1.out")"
grep -q "received User defined signal 1: stopped after step" "$dir/usr1.out" ||
  fail "SIGUSR1: no stop logged: $(tail -3 "$dir/usr1.out")"
echo "ok: $(grep -o 'received User defined signal 1: stopped after step [0-9]*' "$dir/usr1.out") (signal to rank 1 only)"
echo "faults ok"

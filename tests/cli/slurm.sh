# scripts/slurm/longtrain.sbatch run as Slurm would run it (its environment
# and a stand-in scontrol): 2 ranks under mpirun with per-rank logs; the
# time-limit signal makes it checkpoint, stop and requeue the job; the
# requeued job resumes from that checkpoint, its logs in a folder of their
# own: the first attempt's stay. OpenMPI's TCP keep-alive is set for mpirun.
source "$(dirname "$0")/lib.sh"
dir="$LT_TEST_DIR/cli_slurm"
rm -rf "$dir" && mkdir -p "$dir/bin"
printf '#!/bin/sh\necho "$@" >> "%s/scontrol.calls"\n' "$dir" > "$dir/bin/scontrol"
chmod +x "$dir/bin/scontrol"
# job RESTART_COUNT STEPS, in a subshell of its own that becomes the script
# (so that a signal to its pid reaches the script, as Slurm's does).
job() {
  exec env PATH="$dir/bin:$PATH" SLURM_JOB_ID=42 SLURM_NTASKS=2 SLURM_NTASKS_PER_NODE="2(x1)" SLURM_RESTART_COUNT="$1" \
    LONGTRAIN="$LONGTRAIN" LT_LOG_DIR="$dir/logs" LT_MPIRUN_ARGS=--oversubscribe OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 bash scripts/slurm/longtrain.sbatch recipes/tiny-passkey.yaml "${SHORT[@]}" \
    train.threads=1 eval.at_end=false train.steps="$2" run_dir="$dir/run"
}

# A long run, signalled as --signal=B:USR1@300 would once it trains.
first="$dir/logs/attempt_0/1/rank.0/stdout" second="$dir/logs/attempt_1/1/rank.0/stdout"
(job 0 500) > "$dir/first.out" 2>&1 &
pid=$!
# A failing check leaves no job training behind (mpirun and the ranks name the run).
trap 'pkill -f "run_dir=$dir/run" || true' EXIT
for _ in $(seq 600); do
  grep -q "step 1/500" "$first" 2>/dev/null && break
  sleep 0.1
done
grep -q "step 1/500" "$first" || fail "no step in the per-rank log: $(cat "$dir/first.out")"
kill -USR1 "$pid"
wait "$pid" || fail "the job did not end cleanly: $(cat "$dir/first.out")"
stopped=$(sed -n 's/.*stopped after step \([0-9]*\).*/\1/p' "$first")
[ -n "$stopped" ] && [ "$stopped" -lt 500 ] || fail "no checkpointed stop: $(cat "$first")"
[ "$(cat "$dir/scontrol.calls")" = "requeue 42" ] || fail "not requeued: $(cat "$dir/scontrol.calls" 2>&1)"
[ -e "$dir/logs/attempt_0/1/rank.1/stdout" ] || fail "no log of rank 1: $(ls -R "$dir/logs")"
grep -q "a host silent for 20 s ends the job" "$dir/first.out" || fail "no keep-alive: $(cat "$dir/first.out")"
echo "ok: signalled, stopped after step $stopped with a checkpoint, requeued"

# The requeued job continues from that checkpoint.
(job 1 $((stopped + 2))) > "$dir/second.out" 2>&1 || fail "$(cat "$dir/second.out")"
grep -q "resumed from .*step_0*$stopped at step $stopped" "$second" ||
  fail "did not resume: $(tail -5 "$second" 2>&1)"
grep -q "step $((stopped + 2))/$((stopped + 2))" "$second" || fail "did not finish"
[ "$(wc -l < "$dir/scontrol.calls")" -eq 1 ] || fail "requeued a job that finished"
echo "ok: the requeued job resumed at step $stopped and finished"

# The first attempt's logs are still there, whole; latest is the second's.
grep -q "step 1/500" "$first" && grep -q "stopped after step $stopped" "$first" &&
  ! grep -q "resumed from" "$first" || fail "the first attempt's log was lost: $(ls -R "$dir/logs")"
[ "$(readlink "$dir/logs/latest")" = attempt_1 ] || fail "latest is not attempt_1: $(ls -l "$dir/logs")"
echo "ok: each attempt's logs kept (attempt_0, attempt_1)"

# Outside sbatch, or without a recipe: one line.
expect_error "run this through sbatch" env -u SLURM_JOB_ID bash scripts/slurm/longtrain.sbatch recipes/tiny-passkey.yaml
expect_error "usage: sbatch" env SLURM_JOB_ID=1 bash scripts/slurm/longtrain.sbatch
echo "slurm ok"

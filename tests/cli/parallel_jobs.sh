# The program as a parallel job: mpirun -np 2 with dp=2 (ZeRO-1), with
# Ulysses and with ring sequence parallelism, with tensor and with pipeline
# parallelism, gives the losses of one process on the same global batch;
# the shipped 4D recipe plans; one failing rank ends the whole job
# quickly with its message; a layout that does not fit the world is one
# clear line, before anything is allocated; `plan` prints the grid.
source "$(dirname "$0")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe --bind-to none)
dir="$LT_TEST_DIR/cli_dp"
rm -rf "$dir"
run() { "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" eval.at_end=false train.threads=1 "$@"; }

# Each layout on 2 ranks against one process in the same precision: fp32
# within 1e-5, bf16 (where the CPU computes in it) within 5e-3 of one bf16 process.
same_as_one() {  # PRECISION LAYOUT...
  local precision=$1; shift
  local layout="$*" name
  name=$precision${layout//[ .=]/_}
  "${MPIRUN[@]}" -np 2 "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" eval.at_end=false \
    train.threads=1 train.precision="$precision" run_dir="$dir/$name" "$@" > "$dir/$name.out"
  grep -q "2 ranks" "$dir/$name.out" || fail "no 2-rank run for $layout: $(cat "$dir/$name.out")"
  python3 - "$dir/one_$precision/metrics.jsonl" "$dir/$name/metrics.jsonl" "$precision $layout" <<'PY' || fail "$precision $layout: losses differ from one process"
import json, sys
one, two = ([json.loads(l)["loss"] for l in open(f) if '"loss"' in l] for f in sys.argv[1:3])
assert len(one) == len(two) == 4, (one, two)
tolerance = 5e-3 if sys.argv[3].startswith("bf16") else 1e-5
for a, b in zip(one, two):
    assert abs(a - b) <= tolerance * abs(a), (a, b)
print(sys.argv[3] + ": losses equal one process:", two)
PY
}
run train.precision=fp32 run_dir="$dir/one_fp32" > /dev/null
# The default precision follows the CPU: bf16 with bf16 matrix instructions
# (AVX512-BF16 or AMX), else fp32. Without them the bf16 arms are skipped:
# emulated bf16 runs these models (and the MFU peak) minutes a run; the
# equivalence matrix (tests/mpi) covers bf16 reductions on any CPU.
default=fp32
grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo && default=bf16
run run_dir="$dir/default" > "$dir/default.out"
grep -q "computing in $default" "$dir/default.out" || fail "the default on this CPU is not $default: $(cat "$dir/default.out")"
for layout in "parallel.dp=2 parallel.zero=1" "parallel.dp=2 parallel.zero=2" "parallel.dp=2 parallel.zero=3" \
              "parallel.sp.ulysses=2" "parallel.sp.ring=2" "parallel.tp=2" "parallel.pp=2"; do
  same_as_one fp32 $layout
done
if [ "$default" = bf16 ]; then
  run train.precision=bf16 run_dir="$dir/one_bf16" > /dev/null
  for layout in "parallel.dp=2 parallel.zero=1 parallel.reduce_dtype=bf16" "parallel.sp.ulysses=2 parallel.zero=3" \
                "parallel.sp.ring=2" "parallel.tp=2"; do
    same_as_one bf16 $layout
  done
else
  echo "skipped: the bf16 layouts (this CPU has no bf16 matrix instructions)"
fi

# longtrain eval under mpirun: each rank its part of the recipe's layout
# (ZeRO-3: its shard of the weights, each layer gathered as it runs), one
# report from rank 0 with one process's figures; mid-training evaluation of
# a split model on its own layout too.
EVAL=(recipes/tiny-passkey.yaml --checkpoint "$dir/fp32parallel_tp_2/checkpoints" "${SHORT[@]}" train.threads=1
      train.precision=fp32)
"$LONGTRAIN" eval "${EVAL[@]}" parallel.tp=2 > "$dir/eval_one.out"
want=$(grep "^eval: loss [0-9]" "$dir/eval_one.out")
for layout in "parallel.tp=2" "parallel.pp=2" "parallel.sp.ring=2" "parallel.dp=2 parallel.zero=3" \
              "parallel.sp.ulysses=2 parallel.zero=3"; do
  "${MPIRUN[@]}" -np 2 "$LONGTRAIN" eval "${EVAL[@]}" $layout > "$dir/eval_two.out"
  [ "$(grep -c "^eval: loss [0-9]" "$dir/eval_two.out")" -eq 1 ] || fail "eval $layout: $(cat "$dir/eval_two.out")"
  got=$(grep "^eval: loss [0-9]" "$dir/eval_two.out")
  [ -n "$want" ] && [ "$got" = "$want" ] || fail "eval on 2 ranks with $layout: '$got', one process: '$want'"
  echo "ok: eval on 2 ranks with $layout: $got"
done
# Bad input to a job's eval is one line from rank 0: a layout the ranks do
# not fit, a missing checkpoint, a model other than the checkpoint's.
expect_error "3 ranks cannot be split into replicas of tp=2" "${MPIRUN[@]}" -q -np 3 "$LONGTRAIN" eval "${EVAL[@]}" \
  parallel.tp=2
expect_error "/nonexistent: checkpoint not found" "${MPIRUN[@]}" -q -np 2 "$LONGTRAIN" eval recipes/tiny-passkey.yaml \
  --checkpoint /nonexistent parallel.tp=2
expect_error "'lm_head.weight' has shape [256, 128], the model [256, 96]: the recipe's model differs from the checkpoint's" \
  "${MPIRUN[@]}" -q -np 2 "$LONGTRAIN" eval "${EVAL[@]}" parallel.tp=2 model.hidden_size=96
"${MPIRUN[@]}" -np 2 "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" train.threads=1 parallel.pp=2 \
  eval.interval=2 run_dir="$dir/eval_interval" > "$dir/eval_interval.out"
[ "$(wc -l < "$dir/eval_interval/eval.jsonl")" -eq 2 ] || fail "pp=2, eval.interval=2: $(cat "$dir/eval_interval.out")"
echo "ok: pp=2 evaluates at steps 2 and 4"

# profile: both ranks trace steps 2-3: every operator, longtrain's spans,
# and the collectives on the communicator's worker thread.
"${MPIRUN[@]}" -np 2 "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" eval.at_end=false train.threads=1 \
  parallel.dp=2 profile.start_step=2 profile.end_step=3 "profile.ranks=[0, 1]" run_dir="$dir/profile" \
  > "$dir/profile.out" 2>&1
grep -q "profile: steps 2-3 traced to $dir/profile/trace/" "$dir/profile.out" || fail "no trace: $(cat "$dir/profile.out")"
for rank in 0 1; do
  python3 - "$dir/profile/trace/rank${rank}_steps2-3.json" <<'PY' || fail "trace of rank $rank"
import json, sys
events = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("ph") == "X"]
names = {e["name"] for e in events}
for span in ["lt::attention", "lt::mlp", "lt::loss", "lt::optimizer", "lt::bucket_reduction", "aten::mm"]:
    assert span in names, (span, sorted(n for n in names if n.startswith("lt::")))
worker = {e["tid"] for e in events if e["name"].startswith("lt::all_reduce dp_sp")}
main = {e["tid"] for e in events if e["name"] == "lt::attention"}
assert worker and not worker & main, ("collectives not on the worker thread", worker, main)
print("ok: trace", sys.argv[1].rsplit("/", 1)[1], len(events), "events,", sorted(n for n in names if n.startswith("lt::")))
PY
done

# Rank 1 throws in step 2: its message, once, a non-zero exit, within seconds.
# (MPI itself may add a line about the vanished peer of a transfer.)
start=$(date +%s)
status=0
LT_FAULT=throw@1:2 timeout 120 "${MPIRUN[@]}" -q -x LT_FAULT -np 2 "$LONGTRAIN" train recipes/tiny-passkey.yaml \
  "${SHORT[@]}" train.threads=1 run_dir="$dir/fault" > /dev/null 2> "$dir/fault.err" || status=$?
elapsed=$(( $(date +%s) - start ))
[ "$status" -ne 0 ] || fail "a failing rank left exit 0"
[ "$(grep -c 'longtrain: error' "$dir/fault.err")" -eq 1 ] || fail "not one error line: $(cat "$dir/fault.err")"
grep -q "longtrain: error on rank 1: injected fault" "$dir/fault.err" || fail "message lost: $(cat "$dir/fault.err")"
[ "$elapsed" -lt 60 ] || fail "the job took ${elapsed}s to end"
echo "ok: $(grep 'longtrain: error' "$dir/fault.err") (job ended in ${elapsed}s)"

# Rank 1 hangs at STEP (0: in set-up); rank 0's watchdog names what it waited in.
expect_watchdog() {
  local step=$1 name=$2 message=$3 status=0
  LT_FAULT=hang@1:$step timeout 120 "${MPIRUN[@]}" -x LT_FAULT -np 2 "$LONGTRAIN" train recipes/tiny-passkey.yaml \
    "${SHORT[@]}" train.threads=1 run_dir="$dir/$name" parallel.timeout_s=2 > /dev/null 2> "$dir/$name.err" || status=$?
  [ "$status" -ne 0 ] || fail "a hung rank left exit 0 ($name)"
  grep -q "error on rank 0: watchdog: $message (rank 0 of 2, world rank 0) did not finish within 2 s" "$dir/$name.err" ||
    fail "no watchdog message ($name): $(cat "$dir/$name.err")"
  echo "ok: $(grep watchdog "$dir/$name.err")"
}
expect_watchdog 2 hang "all_reduce on group 'dp_sp'"
expect_watchdog 0 setup_hang "agreeing on the recipe on group 'world'"

# A second fresh run in a run directory with the first's checkpoints: one
# line from rank 0, exit 2, the first run's checkpoints untouched.
"${MPIRUN[@]}" -np 2 "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" train.threads=1 eval.at_end=false \
  run_dir="$dir/owned" > /dev/null
before=$(cat "$dir/owned/checkpoints/step_00000004/manifest.json")
expect_error "holds checkpoints of another run (step_00000004) that this run would prune or shadow" "${MPIRUN[@]}" -q -np 2 \
  "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" train.threads=1 train.steps=2 run_dir="$dir/owned"
[ "$before" = "$(cat "$dir/owned/checkpoints/step_00000004/manifest.json")" ] || fail "the first run's checkpoint changed"
# Resuming a damaged checkpoint: every rank finds it, rank 0 says it once.
sed -i 's/"step": 4/"step": 5/' "$dir/owned/checkpoints/step_00000004/manifest.json"
expect_error "manifest.json: the manifest's checksum does not match its contents" "${MPIRUN[@]}" -q -np 2 \
  "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" train.threads=1 checkpoint.resume=auto run_dir="$dir/owned"

# Set-up errors every rank finds (a layout that does not fit the world, a
# dimension this build cannot train yet) are one line from rank 0 and exit 2
# (mpirun -q keeps mpirun's own notice of the exit code out).
expect_error "3 ranks cannot be split into replicas of tp=2" "${MPIRUN[@]}" -q -np 3 "$LONGTRAIN" train \
  recipes/tiny-passkey.yaml parallel.tp=2
expect_error "parallel.ep=2 splits the experts of a mixture-of-experts model, and this model has none" "${MPIRUN[@]}" -q -np 2 "$LONGTRAIN" train \
  recipes/tiny-passkey.yaml parallel.ep=2

expect_error "6 ranks cannot be split into replicas of tp=4" "$LONGTRAIN" plan recipes/tiny-passkey.yaml --world 6 parallel.tp=4
"$LONGTRAIN" plan recipes/tiny-passkey.yaml --world 8 --ranks-per-node 4 parallel.tp=2 parallel.pp=2 > "$dir/plan.out"
grep -q "tp 2 x ulysses 1 x ring 1 x dp 2 x pp 2" "$dir/plan.out" || fail "plan: $(cat "$dir/plan.out")"
# The shipped 4D recipe plans on 64 ranks: its stages and the model split.
"$LONGTRAIN" plan recipes/llama3-8b-128k-4d.yaml --world 64 init.from_hf="''" model.preset=llama3-8b > "$dir/plan4d.out"
for line in "tp 4 x ulysses 4 x ring 1 x dp 2 x pp 2" "pipeline: pp 2, 1F1B over 16 micro-batches" \
            "tensor: tp 4 with sequence split" "^1      16-31 "; do
  grep -q "$line" "$dir/plan4d.out" || fail "plan of the 4D recipe lacks '$line': $(cat "$dir/plan4d.out")"
done
# The Mixtral recipe: experts over 8 ranks, all forwards first for its global-batch balance.
"$LONGTRAIN" plan recipes/mixtral-8x7b-64k-ep.yaml --world 64 init.from_hf="''" model.preset=mixtral-8x7b \
  > "$dir/plan_moe.out"
for line in "ep 8 from dp x sp" "pp 4, all forwards first (GPipe) over 4 micro-batches"; do
  grep -qF "$line" "$dir/plan_moe.out" || fail "plan of the MoE recipe lacks '$line': $(cat "$dir/plan_moe.out")"
done
# The context-extension recipes plan from their presets (no HF download).
for recipe in llama3-8b-128k-4d:llama3-8b qwen2.5-7b-128k-yarn:qwen2.5-7b llama3-8b-512k:llama3-8b \
              qwen3-8b-128k-yarn:qwen3-8b qwen3-30b-a3b-128k-ep:qwen3-30b-a3b; do
  name=${recipe%%:*}
  "$LONGTRAIN" plan "recipes/$name.yaml" --world 64 init.from_hf="''" model.preset="${recipe##*:}" \
    > "$dir/plan_$name.out" || fail "plan of recipes/$name.yaml failed"
  grep -q "^0 " "$dir/plan_$name.out" || fail "plan of recipes/$name.yaml: $(cat "$dir/plan_$name.out")"
done
grep -q "sequence: ulysses 2 x ring 4 (zigzag): 65536 tokens per rank of 524288" "$dir/plan_llama3-8b-512k.out" ||
  fail "512K plan: $(cat "$dir/plan_llama3-8b-512k.out")"
grep -qF "ep 8 from dp x sp" "$dir/plan_qwen3-30b-a3b-128k-ep.out" ||
  fail "Qwen3-30B-A3B plan: $(cat "$dir/plan_qwen3-30b-a3b-128k-ep.out")"

# Adaptive sequence parallelism, the shipped recipe shortened: 4 ranks give
# the losses of one process (without the activation limit, which one rank
# cannot meet), every step's plan is logged; on one rank with the limit, a
# document no group holds is one clear line.
ASP=(train.steps=3 train.warmup_steps=1 train.global_batch_tokens=4K data.seq_len=1024 data.passkey.max_doc_len=1024
     parallel.adaptive.activation_gb=0.015 eval.at_end=false train.threads=1 train.precision=fp32)
"${MPIRUN[@]}" -np 4 "$LONGTRAIN" train recipes/tiny-adaptive-sp.yaml "${ASP[@]}" run_dir="$dir/asp4" > "$dir/asp4.out"
grep -q "| groups " "$dir/asp4.out" || fail "no plan in the log: $(cat "$dir/asp4.out")"
"$LONGTRAIN" train recipes/tiny-adaptive-sp.yaml "${ASP[@]}" parallel.adaptive.activation_gb=0 \
  run_dir="$dir/asp1" > /dev/null
python3 - "$dir/asp1/metrics.jsonl" "$dir/asp4/metrics.jsonl" "$dir/asp4/adaptive_sp.jsonl" <<'PY' || fail "adaptive: $(cat "$dir/asp4.out")"
import json, sys
one, four = ([json.loads(l)["loss"] for l in open(f) if '"loss"' in l] for f in sys.argv[1:3])
assert len(one) == len(four) == 3, (one, four)
for a, b in zip(one, four):
    assert abs(a - b) <= 1e-5 * abs(a), (a, b)
plans = [json.loads(l) for l in open(sys.argv[3])]
assert [p["step"] for p in plans] == [1, 2, 3], plans
assert all(max(p["groups"]) >= 2 for p in plans), plans  # the long documents needed groups
print("adaptive on 4 ranks: losses equal one process:", four, "groups", [p["groups"] for p in plans])
PY
expect_error "exceeds the activation memory of every group up to 1 ranks (parallel.adaptive.activation_gb=0.015" "$LONGTRAIN" train recipes/tiny-adaptive-sp.yaml "${ASP[@]}" \
  run_dir="$dir/asp_too_long"
echo "parallel jobs ok"

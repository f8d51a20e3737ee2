# Misuse through the program, second round: ranks given different inputs,
# data cut while training, runs whose files cannot be written, names that
# are not UTF-8, exports from elsewhere and over an earlier one, and the
# run's own config.yaml read back. Each ends in one line and a non-zero
# exit, or works.
source "$(dirname "$0")/lib.sh"
dir="$LT_TEST_DIR/cli_hardening"
rm -rf "$dir" && mkdir -p "$dir"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun -q --oversubscribe --bind-to none)  # -q: mpirun's own notice of an exit code stays out
recipe="$PWD/recipes/tiny-passkey.yaml"

# A Megatron dataset (uint16 tokens below the tiny model's 256) of DOCS
# documents of LENGTH tokens: dataset PREFIX DOCS LENGTH SEED.
dataset() {
  python3 - "$@" <<'PY'
import random, struct, sys
prefix, docs, length, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
with open(prefix + ".bin", "wb") as out:
    for _ in range(docs):
        out.write(struct.pack(f"<{length}H", *(rng.randrange(3, 250) for _ in range(length))))
with open(prefix + ".idx", "wb") as out:
    out.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, docs, docs + 1))
    out.write(struct.pack(f"<{docs}i", *([length] * docs)))
    out.write(struct.pack(f"<{docs}q", *(2 * length * i for i in range(docs))))
    out.write(struct.pack(f"<{docs + 1}q", *range(docs + 1)))
PY
}
INDEXED=(data.source=indexed data.packing=split data.eval_fraction=0.1 eval.at_end=false)

# --- Ranks that disagree: one line from rank 0, at once, naming the key
# or file and the ranks. Each rank of an MPMD launch gets its own arguments.
two_ranks() {  # two_ranks "ARGS OF RANK 0" "ARGS OF RANK 1" (word-split)
  # shellcheck disable=SC2086
  "${MPIRUN[@]}" -np 1 "$LONGTRAIN" $1 : -np 1 "$LONGTRAIN" $2
}
base="train $recipe ${SHORT[*]} run_dir=$dir/agree"
expect_error "disagree on train.lr: '0.003' on rank 0, '0.002' on rank 1" two_ranks "$base" "$base train.lr=0.002"
expect_error "disagree on model.intermediate_size: '384' on rank 0, '512' on rank 1" \
  two_ranks "$base" "$base model.intermediate_size=512"
start=$SECONDS
expect_error "disagree on train.steps: '4' on rank 0, '5' on rank 1" two_ranks "$base" "$base train.steps=5"
[ $((SECONDS - start)) -lt 60 ] || fail "a disagreement took $((SECONDS - start)) s to end"
# The same relative path naming different files on the two ranks (their
# working folders differ, as two hosts' file systems may).
mkdir -p "$dir/host0" "$dir/host1"
dataset "$dir/host0/tokens" 40 64 1
dataset "$dir/host1/tokens" 50 64 2
indexed="train $recipe ${SHORT[*]} ${INDEXED[*]} data.path=tokens run_dir=$dir/agree_data"
expect_error "disagree on input tokens.bin: '5120 bytes' on rank 0, '6400 bytes' on rank 1" \
  "${MPIRUN[@]}" -np 1 -wdir "$dir/host0" "$LONGTRAIN" $indexed : -np 1 -wdir "$dir/host1" "$LONGTRAIN" $indexed
# The checkpoint an eval loads, likewise.
"$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir="$dir/host0/run" > /dev/null
"$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir="$dir/host1/run" train.seed=7 > /dev/null
evaluate="eval $recipe --checkpoint run/checkpoints ${SHORT[*]} run_dir=$dir/agree_eval"
expect_error "disagree on input checkpoint run/checkpoints" \
  "${MPIRUN[@]}" -np 1 -wdir "$dir/host0" "$LONGTRAIN" $evaluate : -np 1 -wdir "$dir/host1" "$LONGTRAIN" $evaluate
# Ranks that agree train as before.
"${MPIRUN[@]}" -np 2 "$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir="$dir/agreed" > "$dir/agreed.out" 2>&1 ||
  fail "two agreeing ranks: $(tail -3 "$dir/agreed.out")"
echo "ok: ranks that disagree end at once, naming the key or file"

# --- Data cut under a running job: one line naming the file, on one rank and on two.
for ranks in 1 2; do
  run="$dir/cut$ranks"
  mkdir -p "$run"
  dataset "$run/tokens" 400 256 3
  timeout 300 "${MPIRUN[@]}" -np "$ranks" "$LONGTRAIN" train "$recipe" "${SHORT[@]}" "${INDEXED[@]}" data.path="$run/tokens" \
    train.steps=100000 run_dir="$run" > "$run.out" 2> "$run.err" &
  pid=$!
  for _ in $(seq 600); do grep -q "step 2/" "$run.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "step 2/" "$run.out" || fail "no training step: $(cat "$run.err")"
  truncate -s 0 "$run/tokens.bin"
  status=0
  wait "$pid" || status=$?
  [ "$status" -ne 0 ] || fail "exit 0 after the data was cut"
  grep -q "$run/tokens.bin: changed or truncated while training" "$run.err" || fail "no line naming the file: $(cat "$run.err")"
  ! grep -q "Bus error\|SIGBUS\|signal 7" "$run.err" || fail "a bus error: $(cat "$run.err")"
done
echo "ok: data cut while training is one line naming the file, on 1 and 2 ranks"

# --- Every write checked: a file of the run that cannot be written (here a
# full disk: /dev/full) ends the run naming it, with the last checkpoint kept.
"$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir="$dir/full" checkpoint.interval=2 > /dev/null
for file in metrics.jsonl train.log config.yaml eval.jsonl; do
  rm -f "$dir/full/$file" && ln -s /dev/full "$dir/full/$file"
  expect_error "$dir/full/$file" "$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir="$dir/full" train.steps=6 \
    checkpoint.resume=auto checkpoint.interval=2
  rm "$dir/full/$file"
  [ -f "$dir/full/checkpoints/step_00000004/manifest.json" ] || fail "the last good checkpoint is gone"
done
echo "ok: a run whose files cannot be written ends naming the file"

# --- Names that are not UTF-8: refused up front, whatever names them.
bad=$'\xff\xfe'
expect_error "train: argument 'run_dir=$dir/\\xff\\xfe' is not valid UTF-8" "$LONGTRAIN" train "$recipe" "${SHORT[@]}" "run_dir=$dir/$bad"
printf 'model:\n  preset: tiny\nrun_dir: runs/%s\n' "$bad" > "$dir/bytes.yaml"
expect_error "bytes.yaml:3:10: run_dir: got" "$LONGTRAIN" train "$dir/bytes.yaml"
expect_error "is not valid UTF-8" "$LONGTRAIN" eval "$recipe" "${SHORT[@]}" --checkpoint "$dir/$bad"
expect_error "is not valid UTF-8" "$LONGTRAIN" export "$dir/$bad" --hf "$dir/out"
expect_error "is not valid UTF-8" "$LONGTRAIN" data "$dir/$bad"
expect_error "$dir/none: checkpoint not found" "$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir="$dir/r" \
  checkpoint.resume="$dir/none"
echo "ok: names that are not UTF-8 are refused up front"

# --- Export: of the run named, from any folder; over an earlier export only
# when whole; shard sizes that are numbers.
mkdir -p "$dir/elsewhere/runs"
(cd "$dir/host0" && "$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir=runs/a > /dev/null)
(cd "$dir/elsewhere" && "$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir=runs/a train.seed=9 > /dev/null)
(cd "$dir/host0" && "$LONGTRAIN" export runs/a --hf "$dir/a_here" --dtype float32 > /dev/null)
(cd "$dir/elsewhere" && "$LONGTRAIN" export "$dir/host0/runs/a" --hf "$dir/a_there" --dtype float32 > /dev/null)
cmp -s "$dir/a_here/model.safetensors" "$dir/a_there/model.safetensors" ||
  fail "export from another folder exported another run"
for size in 1e400 inf nan -1 0 1e-9 x; do
  expect_error "--shard-gb '$size' must be a number of GB from 0.001 to 1000000" \
    "$LONGTRAIN" export "$dir/host0/runs/a" --hf "$dir/shards" --shard-gb "$size"
done
# A run's own config.yaml reads back, whatever its values: here a run_dir
# YAML must quote, and the largest finite base.
odd="$dir/a run: #1 'quoted' ünï"
"$LONGTRAIN" train "$recipe" "${SHORT[@]}" "run_dir=\"$odd\"" model.rope_theta=1.7976931348623157e308 > /dev/null
"$LONGTRAIN" export "$odd" --hf "$dir/odd_hf" > /dev/null || fail "export could not read the run's own config.yaml"
expect_error "model.rope_theta: expected a finite number, got '1e400'" \
  "$LONGTRAIN" train "$recipe" "${SHORT[@]}" run_dir="$dir/inf" model.rope_theta=1e400
echo "ok: export reads the run named, validates shard sizes, and every config.yaml reads back"

# --- Recipes: a repeated section or key is an error naming both lines.
printf 'model:\n  preset: tiny\ntrain:\n  steps: 3\ntrain:\n  steps: banana\n' > "$dir/twice.yaml"
expect_error "twice.yaml:5:1: key 'train' appears twice (first at line 3, again at line 5)" \
  "$LONGTRAIN" train "$dir/twice.yaml"
echo "hardening ok"

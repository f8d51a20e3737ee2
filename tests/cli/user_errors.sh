# Every mistake a user can make on the command line ends with one clear line.
source "$(dirname "$0")/lib.sh"
dir="$LT_TEST_DIR/cli_errors"
rm -rf "$dir" && mkdir -p "$dir/recipes"
printf 'model:\n  preset: tiny\ntrain:\n  lr: [1\n' > "$dir/recipes/broken.yaml"

expect_error "unknown command 'trian'" "$LONGTRAIN" trian
expect_error "missing RECIPE" "$LONGTRAIN" train
# One MPI rank where the launcher says the job has more: separate jobs that
# would share one run_dir.
expect_error "WORLD_SIZE=4 says the job has 4" env WORLD_SIZE=4 "$LONGTRAIN" train recipes/tiny-passkey.yaml
expect_error "SLURM_STEP_NUM_TASKS=2 says the job has 2" env SLURM_STEP_NUM_TASKS=2 "$LONGTRAIN" eval recipes/tiny-passkey.yaml
expect_error "SLURM_NTASKS=8 says the job has 8: the launcher started separate single-rank jobs" \
  env SLURM_NTASKS=8 "$LONGTRAIN" train recipes/tiny-passkey.yaml
expect_error "nope.yaml: recipe not found" "$LONGTRAIN" train nope.yaml
expect_error "broken.yaml:5:1: invalid YAML" "$LONGTRAIN" train "$dir/recipes/broken.yaml"
expect_error "did you mean 'train.steps'" "$LONGTRAIN" train recipes/tiny-passkey.yaml train.step=3
expect_error "parallel.emulate_nccl emulates NCCL's ordering on CPU; with train.device: cuda NCCL itself runs" \
  "$LONGTRAIN" train recipes/tiny-passkey.yaml parallel.emulate_nccl=true train.device=cuda
expect_error "unknown option '--fast'" "$LONGTRAIN" train recipes/tiny-passkey.yaml --fast
expect_error "missing --checkpoint" "$LONGTRAIN" eval recipes/tiny-passkey.yaml
expect_error "checkpoint not found" "$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$dir/none"
expect_error "contains no complete checkpoint" "$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$dir"
expect_error "no CUDA device is visible" "$LONGTRAIN" train recipes/tiny-passkey.yaml train.device=cuda "run_dir=$dir/cuda"
expect_error "no CUDA device is visible" "$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$LT_TEST_DIR/cli_train/checkpoints" train.device=cuda
expect_error "cannot open" "$LONGTRAIN" train recipes/tiny-passkey.yaml data.source=indexed "data.path=$dir/missing" "run_dir=$dir/ix"
expect_error "missing.idx: cannot open" "$LONGTRAIN" data "$dir/missing"
expect_error "data.source is passkey: \`longtrain data\` describes indexed datasets" "$LONGTRAIN" data recipes/tiny-passkey.yaml
expect_error "broken.yaml/e.jsonl: cannot append to it" "$LONGTRAIN" eval recipes/tiny-passkey.yaml \
  --checkpoint "$LT_TEST_DIR/cli_train/checkpoints" "${SHORT[@]}" --output "$dir/recipes/broken.yaml/e.jsonl"
expect_error "parallel.dp: got two, must be 'auto' or an integer in [1, 16777216]" "$LONGTRAIN" train recipes/tiny-passkey.yaml parallel.dp=two
# Numbers past 64 bits, or whose product would wrap, are one line too.
expect_error "parallel.dp: got 99999999999999999999, must be 'auto' or an integer" "$LONGTRAIN" train recipes/tiny-passkey.yaml parallel.dp=99999999999999999999
expect_error "train.steps: expected an integer, got '9999999999999999G'" "$LONGTRAIN" train recipes/tiny-passkey.yaml train.steps=9999999999999999G
expect_error "lower the degrees" "$LONGTRAIN" plan recipes/tiny-passkey.yaml --world 8 parallel.tp=65536 parallel.pp=65536 parallel.sp.ulysses=65536 parallel.sp.ring=65536
expect_error "data.seq_len=16 cannot hold a passkey of 5 digits" "$LONGTRAIN" train recipes/tiny-passkey.yaml data.seq_len=16 "data.curriculum=[]" train.global_batch_tokens=1K data.passkey.min_doc_len=36 data.passkey.max_doc_len=64
expect_error "model.num_heads=4 is not divisible by parallel.tp=3" "$LONGTRAIN" train recipes/tiny-passkey.yaml parallel.tp=3
expect_error "does not split over dp=3" "$LONGTRAIN" plan recipes/tiny-passkey.yaml --world 3
expect_error "plan: missing --world N" "$LONGTRAIN" plan recipes/tiny-passkey.yaml
expect_error "plan: --world 'x' must be a positive integer" "$LONGTRAIN" plan recipes/tiny-passkey.yaml --world x
expect_error "memory.device_budget_gb: no plan fits 10.2 MiB per rank; the leanest" "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" memory.plan=auto memory.device_budget_gb=0.01 "run_dir=$dir/budget"
expect_error "memory.plan: auto fits the step into memory.device_budget_gb" "$LONGTRAIN" train recipes/tiny-passkey.yaml memory.plan=auto
expect_error "train.precision: got fp16, fp16 is not supported" "$LONGTRAIN" train recipes/tiny-passkey.yaml train.precision=fp16
expect_error "parallel.reduce_dtype: bf16 rounds gradients of bf16 compute" "$LONGTRAIN" train recipes/tiny-passkey.yaml train.precision=fp32 parallel.reduce_dtype=bf16
expect_error "train.precision: bf16 needs bf16 matrix instructions" env LT_CPU_BF16=0 "$LONGTRAIN" train recipes/tiny-passkey.yaml train.precision=bf16
expect_error "profile: steps 3 to 9 must lie within the run's 4 steps" "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" profile.start_step=3 profile.end_step=9
expect_error "LT_FAULT='oops': expected" env LT_FAULT=oops "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" "run_dir=$dir/fault"
"$LONGTRAIN" --help | grep -q "usage: longtrain" || fail "--help"
"$LONGTRAIN" plan --help | grep -q "usage: longtrain plan" || fail "plan --help"
"$LONGTRAIN" train --help | grep -q "usage: longtrain train" || fail "train --help"
"$LONGTRAIN" eval --help | grep -q "usage: longtrain eval" || fail "eval --help"
echo "user errors ok"

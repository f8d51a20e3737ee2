#!/usr/bin/env bash
# Benchmarks, each against its baseline in the same invocation:
#  train: single-process training throughput, longtrain against HF
#    transformers' training loop on the same 56M Llama, fp32 and bf16, at 2K
#    and 8K tokens; then the attention kernels against each other;
#  dp: data parallelism on 2 ranks: gradient reduction overlapped with
#    backward vs. after it, and our communicator vs. plain MPI calls;
#  sp: one 8K-token sequence over 1, 2, 4, 8 ranks with Ulysses, ring and
#    the hybrid: tokens/s, peak memory per rank, bytes sent against theory;
#    and the longest sequence trainable in 256 MiB of working memory per rank;
#  mp: the 1F1B pipeline's idle fraction on 2 and 4 stages against
#    (p-1)/(m+p-1), and the bytes tensor parallelism sends against theory;
#  mem: the longest sequence (up to 32K: longer steps take many minutes on
#    CPU) one process trains within 512 MiB of working memory, with no
#    memory feature and with all, and each feature's time (and the chunked
#    model state's); the host AdamW against separate ATen operations, and a
#    step with the chunks' update overlapped with backward vs after it.
# Writes tests/bench/results/*.json and prints the tables of docs/benchmarks.md.
#  moe: a mixture-of-experts step against a dense one with the same active
#    parameters, the experts' load under micro-batch vs global-batch
#    balance, and the bytes expert parallelism sends against theory.
#  hf: loading an HF checkpoint into one rank (whole, a tp rank's or a
#    pipeline stage's slices) against reading its whole files, from disk;
#    tokens/s across a length curriculum's stages.
#  asp: the adaptive sequence-parallel planner on a simulated 64-GPU
#    cluster against the best static layout (predicted by the same model);
#    then adaptive against static training on 8 CPU ranks (tokens/s, and
#    the planner's predicted against the measured step).
#  resume: 8 ranks (tp 2 x pp 2 x dp 2) read their weights back from the
#    checkpoint they wrote, and one rank the whole model: the peak host
#    memory each load added against the bytes of the weights it holds.
#  zero: the model state one rank holds at ZeRO 0-3 on 1, 2, 4 and 8
#    ranks against `longtrain plan`'s prediction, and its host memory with
#    the layers offloaded in chunks; a step of ZeRO-3 against
#    ZeRO-1 on 2 and 4 ranks, with the seconds it waited for gathers and
#    reductions; `longtrain plan` for Llama-3-8B over 8 GPUs with Ulysses 8
#    and ZeRO-3 at 128K, 1M and 3.7M tokens.
#   scripts/bench.sh [STEPS] [all|train|dp|sp|mp|mem|moe|hf|asp|resume|zero]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-3}
which=${2:-all}
scripts/build.sh --target lt_bench_train --target lt_bench_attention --target lt_bench_dp --target lt_bench_sp \
  --target lt_bench_mp --target lt_bench_mem --target lt_bench_opt --target lt_bench_moe --target lt_bench_hf --target lt_bench_asp --target lt_bench_resume --target lt_bench_zero --target longtrain > /dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ "$which" = all ] || [ "$which" = sp ]; then
  {
    mpirun -np 1 build/lt_bench_sp ulysses 8192 "$steps"
    for ranks in 2 4 8; do
      layouts="ulysses ring"
      [ "$ranks" -lt 4 ] || layouts="$layouts hybrid"  # ulysses 2 x ring ranks/2
      for layout in $layouts; do
        mpirun --oversubscribe --bind-to none -np $ranks build/lt_bench_sp $layout 8192 "$steps"
      done
    done
  } | python3 tests/bench/report.py --sequence-parallel --command "scripts/bench.sh $steps sp" \
      --out tests/bench/results/sequence_parallel.json
  # The longest sequence whose step fits 256 MiB of working memory per rank.
  {
    mpirun -np 1 build/lt_bench_sp ulysses longest 256
    for ranks in 2 4 8; do
      for layout in ulysses ring; do
        mpirun --oversubscribe --bind-to none -np $ranks build/lt_bench_sp $layout longest 256
      done
    done
  } | python3 tests/bench/report.py --longest --command "scripts/bench.sh $steps sp" \
      --out tests/bench/results/longest_sequence.json
fi
if [ "$which" = all ] || [ "$which" = mem ]; then
  # glibc keeps freed large blocks in the heap once its mmap threshold has
  # adapted, which would hide what a step frees: a fixed threshold returns
  # them, for both arms alike.
  export MALLOC_MMAP_THRESHOLD_=1048576
  cap=$((512 << 20))
  {
    for features in none all; do
      seq=512
      while line=$(build/lt_bench_mem $seq $features) &&
            [ "$(python3 -c "import json,sys; print(int(json.loads(sys.argv[1])['step_memory_bytes'] <= $cap))" "$line")" = 1 ]; do
        echo "$line" | python3 -c "import json,sys; r=json.load(sys.stdin); r['mode']='fits'; print(json.dumps(r))"
        seq=$((seq * 2))
        [ $seq -le 32768 ] || break
      done
    done
    for features in none checkpoint tiled_mlp tiled_loss all offload; do
      build/lt_bench_mem 2048 $features 3 | python3 -c "import json,sys; r=json.load(sys.stdin); r['mode']='cost'; print(json.dumps(r))"
    done
  } | python3 tests/bench/report.py --memory --command "scripts/bench.sh $steps mem" \
      --out tests/bench/results/activation_memory.json
  unset MALLOC_MMAP_THRESHOLD_
  { build/lt_bench_opt adamw $((16 << 20)) 5; build/lt_bench_opt step "$steps"; } |
    python3 tests/bench/report.py --host-optimizer --command "scripts/bench.sh $steps mem" \
      --out tests/bench/results/host_optimizer.json
fi
if [ "$which" = all ] || [ "$which" = moe ]; then
  {
    build/lt_bench_moe step "$steps"
    build/lt_bench_moe balance
    build/lt_bench_moe layer "$steps"
    timeout 900 python3 tests/bench/hf_moe_layer.py "$steps" "$(nproc)" || true  # (its eager experts are slow on CPU)
    for ranks in 2 4; do mpirun --oversubscribe --bind-to none -np $ranks build/lt_bench_moe dispatch; done
  } |
    python3 tests/bench/report.py --moe --command "scripts/bench.sh $steps moe" --out tests/bench/results/moe.json
fi
if [ "$which" = all ] || [ "$which" = hf ]; then
  # The checkpoint is written once into build/ and reused.
  # (the curriculum's training run logs its steps too: only the JSON lines go on)
  { build/lt_bench_hf load build/bench_hf_checkpoint 3; build/lt_bench_hf curriculum $((steps + 2)); } | grep '^{' |
    python3 tests/bench/report.py --hf --command "scripts/bench.sh $steps hf" --out tests/bench/results/hf.json
fi
if [ "$which" = all ] || [ "$which" = resume ]; then
  # Peak host memory of each rank's load against the weights it holds.
  mpirun --oversubscribe --bind-to none -np 8 build/lt_bench_resume build/bench_resume | grep '^{' |
    python3 tests/bench/report.py --resume --command "scripts/bench.sh $steps resume" --out tests/bench/results/resume_memory.json
fi
if [ "$which" = all ] || [ "$which" = asp ]; then
  # The planner on a simulated 64-GPU cluster, then training on 8 CPU ranks:
  # adaptive against the static layouts that hold the longest document.
  {
    build/lt_bench_asp simulate "$steps" 5
    for layout in milp 4 8; do
      mpirun --oversubscribe --bind-to none -np 8 build/lt_bench_asp train $((steps + 2)) $layout build/bench_asp
    done
  } | grep '^{' | python3 tests/bench/report.py --adaptive-sp --command "scripts/bench.sh $steps asp" \
      --out tests/bench/results/adaptive_sp.json
fi
if [ "$which" = all ] || [ "$which" = mp ]; then
  {
    for stages in 2 4; do
      for micro in 1 2 4 8 16; do
        mpirun --oversubscribe --bind-to none -np $stages build/lt_bench_mp bubble $micro $((steps + 2))
      done
    done
    for ranks in 2 4; do
      for split in 1 0; do
        mpirun --oversubscribe --bind-to none -np $ranks build/lt_bench_mp tp 1024 $split
      done
    done
  } | python3 tests/bench/report.py --model-parallel --command "scripts/bench.sh $steps mp" \
      --out tests/bench/results/model_parallel.json
fi
if [ "$which" = all ] || [ "$which" = dp ]; then
  mpirun --oversubscribe --bind-to none -np 2 build/lt_bench_dp $((steps * 3)) |
    python3 tests/bench/report.py --data-parallel --command "scripts/bench.sh $steps dp" \
      --out tests/bench/results/data_parallel.json
fi
if [ "$which" = all ] || [ "$which" = zero ]; then
  {
    for ranks in 1 2 4 8; do
      mpirun --oversubscribe --bind-to none -np $ranks build/lt_bench_zero state
      mpirun --oversubscribe --bind-to none -np $ranks build/lt_bench_zero host
    done
    for ranks in 2 4; do
      mpirun --oversubscribe --bind-to none -np $ranks build/lt_bench_zero step "$steps"
    done
  } | python3 tests/bench/report.py --zero --command "scripts/bench.sh $steps zero" --out tests/bench/results/zero.json
  plan() {  # longtrain plan's per-rank row for Llama-3-8B over 8 GPUs, Ulysses 8, at SEQ with more settings
    local seq=$1; shift
    build/longtrain plan recipes/llama3-8b-zero3.yaml --world 8 data.seq_len=$seq train.global_batch_tokens=$seq \
      model.max_seq_len=$seq "$@" | sed -n '/^stage/p;/^0 .*-/p;/^activation offload/p'
  }
  {
    for zero in 1 2 3; do echo "== $(date -I) Llama-3-8B, 8 GPUs, Ulysses 8, ZeRO-$zero, 3.7M tokens"; plan 3700K parallel.zero=$zero; done
    for seq in 128K 1M 4M 5800K 6M; do echo "== Llama-3-8B, 8 GPUs, Ulysses 8, ZeRO-3, $seq tokens"; plan $seq; done
  } | tee tests/bench/results/zero_plan_llama3_8b.txt
fi

[ "$which" = all ] || [ "$which" = train ] || exit 0
# Training against HF transformers (tests/bench/hf_train.py: SDPA, fused
# AdamW, bf16 autocast) on the same 56M Llama, fp32 and bf16 each: the four
# arms interleaved, LT_BENCH_ROUNDS rounds, the best of each reported, at
# each of LT_BENCH_LENGTHS.
rounds=${LT_BENCH_ROUNDS:-3}
runs=()
for length in ${LT_BENCH_LENGTHS:-2048 8192}; do
  for round in $(seq "$rounds"); do
    for precision in fp32 bf16; do
      runs+=("$(build/lt_bench_train "$length" "$steps" "$precision")")
      runs+=("$(python3 tests/bench/hf_train.py "$length" "$steps" --precision "$precision" 2>/dev/null | tail -1)")
    done
    echo "seq $length round $round done" >&2
  done
done
printf '%s\n' "${runs[@]}" | python3 tests/bench/report.py \
  --command "LT_BENCH_ROUNDS=$rounds LT_BENCH_LENGTHS='${LT_BENCH_LENGTHS:-2048 8192}' scripts/bench.sh $steps train" \
  --out tests/bench/results/train_throughput.json

build/lt_bench_attention 2048 8192 | python3 tests/bench/report.py --attention --command "scripts/bench.sh $steps" \
  --out tests/bench/results/attention_kernels.json

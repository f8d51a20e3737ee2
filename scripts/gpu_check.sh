#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU, in one run of under 8
# minutes. Builds longtrain against that machine's PyTorch's LibTorch (or,
# on a machine that can install nothing, takes the binaries
# scripts/gpu_bundle.sh packed into .gpu/) and runs:
#   - a preflight of about a second: the driver, torch, and every library
#     the binaries need (ldd); it stops with one line when one is missing;
#   - the CUDA tests only (CI covers the CPU tests);
#   - bf16 training of a Llama-3-8B-shaped stack (layers cut to fit) at 8K
#     and 32K tokens and at 8K of packed documents; MFU against an 8192^3
#     bf16 product timed with CUDA events;
#   - 8 layers at 8K with their state offloaded in host chunks against the
#     same stack resident: the same losses;
#   - on 2 or more GPUs, a ZeRO-3 step against a ZeRO-1 step;
#   - the longest sequence the 8B model trains with its state offloaded,
#     doubling from 64K within the time left, each length with as many of
#     its 32 layers as the planner says the host's memory holds.
# Every step has its own time limit; on one GPU they add up to under 8
# minutes (with the planner's calls), a second GPU's ZeRO step 90 s more. Results and logs are written as they
# come to tests/bench/results/gpu.json and, when $OUT is set (the device
# run's output folder), under $OUT: a step that fails or hangs loses nothing
# of the steps before it.
#   scripts/gpu_check.sh [SECONDS for the longest-sequence search, default 120]
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-120}
command -v nvidia-smi > /dev/null && nvidia-smi -L || { echo "gpu_check: no NVIDIA GPU on this machine" >&2; exit 1; }
if [ -f .gpu/env.sh ]; then
  # Built elsewhere by scripts/gpu_bundle.sh, for a machine that can install nothing.
  source .gpu/env.sh
  have=$(python3 -c 'import torch; print(torch.__version__)')
  [ "$have" = "$(cat .gpu/torch_version)" ] || {
    echo "gpu_check: .gpu was built against torch $(cat .gpu/torch_version) and this machine has $have:" \
      "make it again (scripts/gpu_bundle.sh) where torch $have is installed" >&2
    exit 1
  }
  bin=.gpu/bin
else
  scripts/setup.sh   # only what is missing; the machine's torch where it is the pinned version
  export LT_BUILD_DIR=build-gpu
  scripts/build.sh --target lt_unit_tests --target lt_bench_train --target lt_bench_zero > build-gpu.log 2>&1 ||
    { tail -50 build-gpu.log; exit 1; }
  bin=build-gpu
fi
logs=${OUT:-tests/bench/results/gpu_logs}
mkdir -p "$logs"
out=tests/bench/results/gpu.json
runs="$logs/runs.jsonl"
: > "$runs"

# Preflight: one line and a stop for what would fail every step.
for b in "$bin"/lt_unit_tests "$bin"/lt_bench_train; do
  missing=$( (ldd "$b" 2> /dev/null || true) | awk '/not found/ {print $1}' | tr '\n' ' ')
  [ -z "$missing" ] || { echo "gpu_check: $b cannot load: $missing(LD_LIBRARY_PATH)" >&2; exit 1; }
done
driver=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
torch=$(python3 -c 'import torch; print(torch.__version__, torch.version.cuda)' 2> /dev/null || echo "none")
echo "gpu_check: $driver; torch $torch" | tee "$logs/preflight.log"

# A step: its own time limit, its log under $logs, a JSON line on failure,
# and the report rewritten after it.
report() {
  python3 tests/bench/report.py --gpu --command "scripts/gpu_check.sh $budget" --out "$out" < "$runs"
  [ -z "${OUT:-}" ] || cp "$out" "$OUT/"
}
# LT_STEP_LIMIT_S caps every limit (a rehearsal's hung step).
step() {
  local name=$1 limit=$2 failure=$3
  shift 3
  [ -z "${LT_STEP_LIMIT_S:-}" ] || [ "$limit" -le "$LT_STEP_LIMIT_S" ] || limit=$LT_STEP_LIMIT_S
  echo "gpu_check: $name (at most ${limit} s)"
  if ! timeout -k 5 "$limit" "$@" > "$logs/$name.out" 2> "$logs/$name.log"; then
    echo "$failure" >> "$runs"
    tail -5 "$logs/$name.log" >&2
    report
    return 1
  fi
  cat "$logs/$name.out" >> "$runs"
  report
}

step cuda_tests 90 '{"impl": "tests", "error": "CUDA tests failed or timed out"}' \
  "$bin"/lt_unit_tests --gtest_filter='Cuda*:*/Cuda*' --gtest_output=json:"$logs/cuda_tests.json" || true
# Throughput: the 8B shape, 8 layers at 8K, 4 at 32K (one GPU's memory without offload).
step train_8k 45 '{"seq": 8192, "error": "failed or timed out"}' "$bin"/lt_bench_train 8192 3 bf16 cuda 8 || true
step train_32k 60 '{"seq": 32768, "error": "failed or timed out"}' "$bin"/lt_bench_train 32768 2 bf16 cuda 4 || true
# The same 8 layers offloaded (host chunks, every layer recomputed, tiled):
# the report compares its losses with the resident run's.
step offload_8k 75 '{"seq": 8192, "offload": true, "error": "failed or timed out"}' \
  "$bin"/lt_bench_train 8192 3 bf16 cuda 8 offload || true
# Packed documents (five per sequence) through the variable-length kernel, against the 8K run above.
step documents_8k 45 '{"seq": 8192, "documents": 5, "error": "failed or timed out"}' \
  "$bin"/lt_bench_train 8192 3 bf16 cuda 8 documents || true
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
  step zero_step 90 '{"bench": "step", "error": "ZeRO-3 against ZeRO-1 on 2 GPUs failed or timed out"}' \
    env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 "$bin"/lt_bench_zero step 3 cuda || true
else
  echo "{\"bench\": \"step\", \"skipped\": \"ZeRO-3 against ZeRO-1 needs 2 GPUs, this machine has $gpus\"}" >> "$runs"
fi
# The longest sequence of the 8B model with its state offloaded, doubling
# from 64K until a step fails (out of memory) or the time budget is spent.
# Before each length the planner (lt_bench_train plan, `longtrain plan`'s
# estimate) says how many of the 32 layers the host holds: their state
# (fp32 weights, gradients, moments and the overlapped update's copies) and
# their offloaded activations within three quarters of the host's memory.
deadline=$(($(date +%s) + budget))
for seq in 65536 131072 262144 524288 1048576; do
  left=$((deadline - $(date +%s)))
  [ "$left" -gt 30 ] || break
  plan=$(timeout 20 "$bin"/lt_bench_train plan "$seq" 2> "$logs/plan_$seq.log") &&
    layers=$(python3 -c 'import json, sys; print(int(json.loads(sys.argv[1])["layers"]))' "$plan" 2>> "$logs/plan_$seq.log") || {
    echo '{"plan": "offload", "seq": '"$seq"', "error": "the planner failed, see plan_'"$seq"'.log"}' >> "$runs"
    break
  }
  echo "$plan" >> "$runs"
  echo "gpu_check: the planner: at $seq tokens the host holds the offloaded state and activations of $layers of the 8B model's 32 layers" |
    tee -a "$logs/longest_plan.log"
  left=$((deadline - $(date +%s)))
  [ "$layers" -ge 1 ] && [ "$left" -gt 30 ] || break
  step "longest_$seq" "$left" "{\"seq\": $seq, \"layers\": $layers, \"offload\": true, \"error\": \"failed or timed out\"}" \
    "$bin"/lt_bench_train "$seq" 1 bf16 cuda "$layers" offload || break
done
report

#!/usr/bin/env bash
# The GPU check (issue 19), for a machine with an NVIDIA GPU, in one run of
# about 8 minutes: builds longtrain against that machine's PyTorch's
# LibTorch (or, on a machine that can install nothing, takes the binaries
# scripts/gpu_bundle.sh packed into .gpu/), runs the CUDA tests (bf16 model
# on the device against fp32 on the host, the variable-length flash kernel
# over packed documents, chunks copied to the device as they are used) and
# the bf16 numerics tests, then measures bf16 training of a
# Llama-3-8B-shaped stack (layers cut to fit) at 8K and 32K tokens and at 8K
# of packed documents, and the longest sequence the full 32-layer model
# trains with its state offloaded, checkpointing and tiling; on a machine
# with 2 or more GPUs also a ZeRO-3 step against a ZeRO-1 step over 2 of
# them (NCCL gathers that should hide behind compute). Writes
# tests/bench/results/gpu.json.
#   scripts/gpu_check.sh [SECONDS for the longest-sequence search, default 240]
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-240}
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
out=tests/bench/results/gpu.json
runs=$(mktemp)
"$bin"/lt_unit_tests --gtest_filter='CudaBf16.*:Bf16*:*/Bf16Attention.*:MixedPrecision.ModelInBf16MatchesFp32' \
  --gtest_output=json:"$runs.tests.json" || echo '{"impl": "tests", "error": "CUDA tests failed"}' >> "$runs"
# Throughput: the 8B shape, 8 layers at 8K, 4 at 32K (one GPU's memory without offload).
"$bin"/lt_bench_train 8192 3 bf16 cuda 8 >> "$runs" || echo '{"seq": 8192, "error": "failed"}' >> "$runs"
"$bin"/lt_bench_train 32768 2 bf16 cuda 4 >> "$runs" || echo '{"seq": 32768, "error": "failed"}' >> "$runs"
# Packed documents (five per sequence) through the variable-length kernel, against the 8K run above.
"$bin"/lt_bench_train 8192 3 bf16 cuda 8 documents >> "$runs" ||
  echo '{"seq": 8192, "documents": 5, "error": "failed"}' >> "$runs"
# ZeRO-3 against ZeRO-1: one GPU per rank.
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 "$bin"/lt_bench_zero step 3 cuda >> "$runs" ||
    echo '{"bench": "step", "error": "ZeRO-3 against ZeRO-1 on 2 GPUs failed"}' >> "$runs"
else
  echo "{\"bench\": \"step\", \"skipped\": \"ZeRO-3 against ZeRO-1 needs 2 GPUs, this machine has $gpus\"}" >> "$runs"
fi
# The longest sequence of the full model: doubling from 64K until a step
# fails (out of memory) or the time budget is spent.
deadline=$(( $(date +%s) + budget ))
for seq in 65536 131072 262144 524288 1048576; do
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 30 ] || break
  timeout "$left" "$bin"/lt_bench_train "$seq" 1 bf16 cuda 32 offload >> "$runs" ||
    { echo "{\"seq\": $seq, \"layers\": 32, \"offload\": true, \"error\": \"failed or timed out\"}" >> "$runs"; break; }
done
python3 tests/bench/report.py --gpu --command "scripts/gpu_check.sh $budget" --out "$out" < "$runs"

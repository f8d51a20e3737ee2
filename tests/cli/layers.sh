#!/usr/bin/env bash
# The layering the build enforces (cmake/layers.cmake): the project's own
# tree passes, and a file including a higher layer fails configure with a
# line naming the file, the include and both layers.
set -euo pipefail
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'include(%s/cmake/layers.cmake)\nlt_check_layers(${TREE})\n' "$root" > "$tmp/check.cmake"
cmake -DTREE="$root" -P "$tmp/check.cmake"

mkdir -p "$tmp/tree/core/util" "$tmp/tree/parallel/comm" "$tmp/tree/train"
printf '#include "core/util/error.h"\n' > "$tmp/tree/parallel/comm/ok.h"
printf '#include <vector>\n#include "train/trainer.h"\n' > "$tmp/tree/core/util/files.h"
printf '#include "offload/chunks/chunk_manager.h"\n' > "$tmp/tree/parallel/comm/up.cpp"
if out=$(cmake -DTREE="$tmp/tree" -P "$tmp/check.cmake" 2>&1); then
  echo "FAIL: upward includes were accepted"
  exit 1
fi
for expected in "core/util/files.h (layer base) includes train/trainer.h (layer train)" \
                "parallel/comm/up.cpp (layer comm) includes offload/chunks/chunk_manager.h (layer offload)"; do
  grep -qF "$expected" <<<"$out" || { echo "FAIL: no line '$expected' in:"; echo "$out"; exit 1; }
done
if grep -q "ok.h" <<<"$out"; then echo "FAIL: a downward include was refused"; exit 1; fi
echo "layers: the tree keeps its layering; upward includes are refused by name"

# scripts/gpu_bundle.sh's bundle, for a GPU machine that can install
# nothing, runs on its own: with this machine's OpenMPI, PMIx and every
# library the bundle carries (yaml-cpp, GLPK, tcmalloc...) hidden, in a
# mount namespace of its own, the bundled benchmarks train, bare and under
# the bundle's mpirun on 2 ranks.
source "$(dirname "$0")/lib.sh"
grep -q '^LT_CUDA:BOOL=ON' "$LT_BUILD_DIR/CMakeCache.txt" || { echo "skipped: this build has no CUDA path"; exit 77; }
unshare -m true 2> /dev/null || { echo "skipped: no mount namespace here (unshare -m)"; exit 77; }
bundle="$LT_TEST_DIR/gpu_bundle"
scripts/gpu_bundle.sh "$bundle"
[ "$(du -sm "$bundle" | cut -f1)" -lt 60 ] || fail "the bundle is $(du -sh "$bundle" | cut -f1): it must travel in 64 MiB"

unshare -m bash -s "$bundle" <<'HIDDEN' || fail "the bundle does not run without the system's libraries"
set -euo pipefail
bundle=$1
mount --make-rprivate /
empty="$bundle.empty" && mkdir -p "$empty"
for dir in /usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/pmix2 /usr/share/openmpi /etc/openmpi; do
  mount --bind "$empty" "$dir"
done
for lib in "$bundle"/lib/*; do
  system=/usr/lib/x86_64-linux-gnu/$(basename "$lib")
  if [ -e "$system" ]; then mount --bind /dev/null "$(readlink -f "$system")"; fi
done
for program in /usr/bin/orted /usr/bin/orterun; do mount --bind /dev/null "$program"; done
source "$bundle/env.sh"
trained=$("$bundle/bin/lt_bench_train" 128 1 fp32 cpu 0 documents)
grep -q '"tokens_per_s"' <<< "$trained"
sharded=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none -np 2 \
  "$bundle/bin/lt_bench_zero" state)
grep -q '"zero":3,.*"measured_over_planned":1.0}' <<< "$sharded"
HIDDEN
echo "gpu bundle ok: $(du -sh "$bundle" | cut -f1), trains with the system's OpenMPI, PMIx, yaml-cpp, GLPK and tcmalloc hidden"

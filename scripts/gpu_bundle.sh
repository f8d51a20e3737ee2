#!/usr/bin/env bash
# Packs into .gpu/ (or DIR) what scripts/gpu_check.sh needs on a GPU machine that can
# install nothing: the lent machines have PyTorch 2.11 with CUDA 13, CMake
# and nvcc, but no Debian packages and no network. It holds the binaries,
# built here against the same torch wheel with the CUDA path on, and the
# shared libraries they load that are neither the C runtime nor PyTorch's,
# CUDA's or NCCL's: yaml-cpp, GLPK, tcmalloc and OpenMPI with its plugins,
# help texts and orted (a process started without mpirun starts one).
# .gpu/env.sh then points the loader at them and at that machine's PyTorch.
#   scripts/gpu_bundle.sh [DIR, default .gpu]
# then take .gpu along to the GPU machine and run scripts/gpu_check.sh there.
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/../.gpu}")
cd "$(dirname "$0")/.."
bins=(lt_unit_tests lt_bench_train lt_bench_zero)
build=${LT_BUILD_DIR:-build}
scripts/build.sh $(printf -- '--target %s ' "${bins[@]}") > /dev/null
grep -q '^LT_CUDA:BOOL=ON' "$build/CMakeCache.txt" ||
  { echo "gpu_bundle: $build has no CUDA path (LT_CUDA is off): build where the CUDA toolkit is" >&2; exit 1; }
ompi=/usr/lib/x86_64-linux-gnu/openmpi
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/ompi/bin" "$out/ompi/share" "$out/ompi/lib/x86_64-linux-gnu/openmpi/lib"
for b in "${bins[@]}"; do cp "$build/$b" "$out/bin/"; done
cp -a "$ompi/lib/openmpi3" "$out/ompi/lib/x86_64-linux-gnu/openmpi/lib/"
cp -a /usr/share/openmpi "$out/ompi/share/"
cp /usr/bin/orted /usr/bin/orterun "$out/ompi/bin/"
cp -a /usr/lib/x86_64-linux-gnu/pmix2 "$out/pmix"  # OpenMPI's PMIx, its plugins and help texts
ln -s orterun "$out/ompi/bin/mpirun"
# What the binaries, OpenMPI's plugins and orted load, less what the GPU
# machine brings (the C and C++ runtimes, zlib, udev and uuid, which its
# Python loads too, and PyTorch, CUDA and NCCL).
ldd "$out"/bin/* "$out"/ompi/lib/x86_64-linux-gnu/openmpi/lib/openmpi3/*.so "$out"/pmix/lib/pmix/*.so "$out"/ompi/bin/orted |
  awk '/=> \// {print $3}' | sort -u |
  grep -v -E '/(torch|nvidia|cuda[^/]*)/|/lib(c|m|dl|rt|pthread|util|stdc\+\+|gcc_s|atomic|gomp|z|udev|uuid)\.so|ld-linux' |
  xargs cp -L -t "$out/lib"
python3 -c 'import torch; print(torch.__version__)' > "$out/torch_version"
cat > "$out/env.sh" <<'ENV'
# Sourced by scripts/gpu_check.sh: the bundle's libraries first, then the
# LibTorch, CUDA and NCCL of this machine's PyTorch; OpenMPI and its PMIx
# relocated into the bundle (OPAL_PREFIX, PMIX_PREFIX), with the transports
# Debian's configuration turns off.
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
export LD_LIBRARY_PATH="$bundle/lib:$site/torch/lib:$(ls -d "$site"/nvidia/*/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export OPAL_PREFIX="$bundle/ompi" PMIX_PREFIX="$bundle/pmix" PATH="$bundle/ompi/bin:$PATH"
export OMPI_MCA_btl='^uct,openib,ofi' OMPI_MCA_pml='^ucx' OMPI_MCA_mtl='^ofi' OMPI_MCA_osc='^ucx,pt2pt' \
  OMPI_MCA_btl_base_warn_component_unused=0 PMIX_MCA_pcompress_base_silence_warning=1
ENV
echo "gpu_bundle: $out holds $(du -sh "$out" | cut -f1) for torch $(cat "$out/torch_version")"

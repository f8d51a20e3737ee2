# scripts/gpu_check.sh refuses, in one line, what it cannot measure: a
# machine without an NVIDIA GPU, and a bundle (.gpu/) made against another
# torch than this machine's; scripts/gpu_bundle.sh refuses a build without
# the CUDA path. Run from copies of the scripts in a tree of their own, with
# stand-ins for nvidia-smi and for the build.
source "$(dirname "$0")/lib.sh"
tree="$LT_TEST_DIR/gpu_check"
rm -rf "$tree" && mkdir -p "$tree/scripts" "$tree/.gpu" "$tree/gpu" "$tree/no_gpu"
cp scripts/gpu_check.sh "$tree/scripts/"
ln -s "$(command -v dirname)" "$tree/no_gpu/dirname"
expect_error "gpu_check: no NVIDIA GPU on this machine" env PATH="$tree/no_gpu" "$BASH" "$tree/scripts/gpu_check.sh"

printf '#!/bin/sh\necho "GPU 0: a stand-in"\n' > "$tree/gpu/nvidia-smi" && chmod +x "$tree/gpu/nvidia-smi"
touch "$tree/.gpu/env.sh"
echo "0.0+other" > "$tree/.gpu/torch_version"
expect_error "gpu_check: .gpu was built against torch 0.0+other and this machine has" \
  env PATH="$tree/gpu:$PATH" "$BASH" "$tree/scripts/gpu_check.sh"

cp scripts/gpu_bundle.sh "$tree/scripts/"
printf '#!/bin/sh\n' > "$tree/scripts/build.sh" && chmod +x "$tree/scripts/build.sh"
mkdir -p "$tree/cpu_build" && echo "LT_CUDA:BOOL=OFF" > "$tree/cpu_build/CMakeCache.txt"
expect_error "gpu_bundle: $tree/cpu_build has no CUDA path (LT_CUDA is off)" \
  env LT_BUILD_DIR="$tree/cpu_build" "$BASH" "$tree/scripts/gpu_bundle.sh" "$tree/bundle"
[ ! -e "$tree/bundle" ] || fail "gpu_bundle.sh made a bundle of a build without the CUDA path"

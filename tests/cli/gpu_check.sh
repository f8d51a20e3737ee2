# scripts/gpu_check.sh refuses, in one line, what it cannot measure: a
# machine without an NVIDIA GPU, and a bundle (.gpu/) made against another
# torch than this machine's. Run from a copy of the script in a tree of its
# own, with a stand-in nvidia-smi.
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

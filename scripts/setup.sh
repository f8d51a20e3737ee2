#!/usr/bin/env bash
# Installs what longtrain needs to build and run, and only what is missing:
# Debian packages (compiler, CMake, OpenMPI, yaml-cpp, GoogleTest,
# nlohmann-json, GLPK, xxHash, tcmalloc, ccache, clang-format), LibTorch
# from PyPI's torch wheel at a pinned version, and the Python tools'
# libraries; with --tests also the reference implementations the tests
# compare against. Safe to run any number of times.
set -euo pipefail

TORCH_VERSION=2.11.0   # the version of the GPU machines' PyTorch; keep in step with docs/design.md
MEGATRON_CORE_VERSION=0.16.1   # test oracles only (scripts/setup.sh --tests)
TRANSFORMERS_VERSION=5.23.0
DEBS=(g++ cmake make python3 python3-pip openmpi-bin libopenmpi-dev libyaml-cpp-dev libgtest-dev
      nlohmann-json3-dev libglpk-dev libxxhash-dev libgoogle-perftools-dev ccache clang-format)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
else
  echo "setup: Debian packages present"
fi

# LibTorch: PyPI's torch wheel at the pinned version. Where it cannot be had,
# or with LT_TORCH=debian, Debian's libtorch-dev 1.13 instead: older, with no
# fused attention kernels (the blockwise kernel serves), and it needs OpenBLAS
# as the BLAS alternative or its matrix products run ~13x slower.
install_debian_torch() {
  echo "setup: installing the fallback LibTorch: Debian's libtorch-dev with libopenblas0-openmp"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libtorch-dev libopenblas0-openmp > /dev/null
  # Select OpenBLAS for the BLAS and LAPACK alternatives LibTorch loads.
  for lib in libblas.so.3 liblapack.so.3; do
    choice=$(update-alternatives --list "$lib-x86_64-linux-gnu" 2>/dev/null | grep openblas-openmp | head -1 || true)
    [ -n "$choice" ] && $SUDO update-alternatives --set "$lib-x86_64-linux-gnu" "$choice" > /dev/null
  done
}

installed_torch=$(python3 -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ -n "${LT_TORCH_PREFIX:-}" ]; then
  echo "setup: LibTorch of your own at $LT_TORCH_PREFIX (LT_TORCH_PREFIX); no torch wheel installed"
elif [ "${LT_TORCH:-wheel}" = "debian" ]; then
  install_debian_torch
elif [ "$installed_torch" = "$TORCH_VERSION" ]; then
  echo "setup: torch $TORCH_VERSION present"
else
  echo "setup: installing torch==$TORCH_VERSION from PyPI (was: ${installed_torch:-none})"
  # Debian's own python refuses pip installs unless told otherwise (PEP 668).
  if ! PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q "torch==$TORCH_VERSION"; then
    echo "setup: warning: could not install torch==$TORCH_VERSION from PyPI; falling back to Debian's" \
         "libtorch-dev 1.13 (slower: no fused attention kernels)" >&2
    install_debian_torch
  fi
fi

# The Python tools' libraries: scripts/preprocess.py's tokenizers and parquet
# reader, scripts/plot.py's matplotlib, TensorBoard to watch log.tensorboard's
# events (theirs only; longtrain itself never imports Python).
TOOLS=(numpy tokenizers sentencepiece pyarrow matplotlib tensorboard)
if python3 -c "import $(IFS=,; echo "${TOOLS[*]}")" 2>/dev/null; then
  echo "setup: tool libraries present (${TOOLS[*]})"
else
  echo "setup: installing tool libraries from PyPI: ${TOOLS[*]}"
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q "${TOOLS[@]}" \
    || echo "setup: warning: could not install the tool libraries; scripts/preprocess.py, plot.py and" \
            "TensorBoard need them" >&2
fi

if [ "${1:-}" = "--tests" ]; then
  # Reference implementations the tests compare against (never used by
  # longtrain itself). They need the torch wheel; pin it so pip keeps ours.
  if python3 -c 'import numpy, megatron.core, transformers' 2>/dev/null; then
    echo "setup: test oracles present (megatron-core, transformers)"
  elif python3 -c 'import torch' 2>/dev/null; then
    echo "setup: installing test oracles from PyPI: numpy megatron-core==$MEGATRON_CORE_VERSION" \
         "transformers==$TRANSFORMERS_VERSION"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q numpy "megatron-core==$MEGATRON_CORE_VERSION" \
      "transformers==$TRANSFORMERS_VERSION" "torch==$TORCH_VERSION" \
      || echo "setup: warning: could not install the test oracles; their tests will be skipped" >&2
  else
    echo "setup: no torch wheel, so no megatron-core or transformers: their oracle tests will be skipped"
  fi
fi

#!/usr/bin/env bash
# Installs what longtrain needs to build and run, and only what is missing:
# Debian packages (compiler, CMake, OpenMPI, yaml-cpp, GoogleTest,
# nlohmann-json, ccache) and LibTorch from PyPI's torch wheel at a pinned
# version. Safe to run any number of times.
set -euo pipefail

TORCH_VERSION=2.11.0   # the version of the GPU machines' PyTorch; keep in step with DESIGN.md
DEBS=(g++ cmake make python3 python3-pip openmpi-bin libopenmpi-dev libyaml-cpp-dev libgtest-dev
      nlohmann-json3-dev ccache)

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

installed_torch=$(python3 -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$installed_torch" = "$TORCH_VERSION" ]; then
  echo "setup: torch $TORCH_VERSION present"
else
  echo "setup: installing torch==$TORCH_VERSION from PyPI (was: ${installed_torch:-none})"
  # Debian's own python refuses pip installs unless told otherwise (PEP 668).
  if ! PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q "torch==$TORCH_VERSION"; then
    cat >&2 <<MSG
setup: error: could not install torch==$TORCH_VERSION from PyPI.
  longtrain needs LibTorch 2.x; check that PyPI is reachable and python3 -m pip works.
  Debian's libtorch-dev (1.13) is older than the 2.x API longtrain is written against
  (fused flash-attention kernels), so it is not a working substitute.
MSG
    exit 1
  fi
fi

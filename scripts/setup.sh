#!/usr/bin/env bash
# setup.sh: install what the engine needs on Debian 12, then configure and build it.
#
#   bash scripts/setup.sh            # packages + build into ./build
#   BUILD_DIR=out bash scripts/setup.sh
#   ENGINE_CUDA=OFF bash scripts/setup.sh   # skip the CUDA backend even if a toolkit is present
#
# Packages come from Debian (apt); nothing is downloaded from elsewhere. Already-installed packages
# are detected first, so a second run is fast and needs no network. The one exception is the
# built-in default dataset (DESIGN.md section 11): the npm package emoji-datasource-google, which
# npm installs into third_party/emoji (git-ignored) unless it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
ENGINE_CUDA=${ENGINE_CUDA:-AUTO}
JOBS=${JOBS:-$(nproc)}

packages=(cmake g++ make pkg-config libopenblas-dev libfmt-dev doctest-dev libstb-dev nlohmann-json3-dev
          libcli11-dev libopenmpi-dev openmpi-bin python3 python3-torch python3-torchvision python3-numpy
          python3-scipy zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# npm (Debian package npm) fetches the emoji dataset below; an npm installed some other way
# (nodesource, nvm) is as good, so only a missing command asks apt for it.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The emoji dataset (io/emoji_dataset.h reads third_party/emoji/node_modules/emoji-datasource-google).
EMOJI_PKG=third_party/emoji/node_modules/emoji-datasource-google
if [ ! -f "$EMOJI_PKG/emoji.json" ] || [ ! -d "$EMOJI_PKG/img/google/64" ]; then
  echo "setup: installing emoji-datasource-google into third_party/emoji"
  npm install --prefix third_party/emoji emoji-datasource-google@16.0.0 --no-audit --no-fund
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGINE_CUDA="$ENGINE_CUDA" \
  -DENGINE_PYTHON=/usr/bin/python3 >/dev/null
cmake --build "$BUILD_DIR" -j"$JOBS"

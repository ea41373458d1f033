#!/usr/bin/env bash
# setup.sh: install what pgolf needs (Debian 12 packages) and build it into ./build.
# Safe to run again: it installs only what is missing and rebuilds incrementally.
# Environment: BUILD_DIR (default build), MESON_ARGS (extra meson options, e.g. -Dcuda=disabled).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(meson ninja-build pkg-config gcc libzstd-dev libbrotli-dev liblzma-dev libxxhash-dev
      libjansson-dev libcriterion-dev python3 g++ libsentencepiece-dev sentencepiece)
[ "${PG_WITH_FUZZ:-0}" = 1 ] && PKGS+=(clang libclang-rt-14-dev)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD_DIR=${BUILD_DIR:-build}
# nvcc is optional: -Dcuda=auto builds the CUDA kernels when the toolkit is installed.
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  meson setup "$BUILD_DIR" ${MESON_ARGS:-} >"${TMPDIR:-/tmp}/pgolf-setup.log" 2>&1 ||
    { cat "${TMPDIR:-/tmp}/pgolf-setup.log"; exit 2; }
fi
ninja -C "$BUILD_DIR" >/dev/null
echo "setup: built pgolf in $BUILD_DIR"

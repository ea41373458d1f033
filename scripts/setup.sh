#!/usr/bin/env bash
# setup.sh: install what pgolf needs (Debian 12 packages) and build it into ./build.
# Safe to run again: it installs only what is missing and rebuilds incrementally.
# Environment: BUILD_DIR (default build), MESON_ARGS (extra meson options, e.g. -Dcuda=disabled).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(meson ninja-build pkg-config gcc libzstd-dev libbrotli-dev liblzma-dev zlib1g-dev
      libxxhash-dev libjansson-dev libcriterion-dev python3 g++ libsentencepiece-dev sentencepiece
      python3-numpy python3-brotli python3-zstandard
      lrzip) # lrzip: pgimport's PGRP groups (spec/import.md §7), bench_pack's records' layout row
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
log=$(mktemp "${TMPDIR:-/tmp}/pgolf-setup.XXXXXX")
trap 'rm -f "$log"' EXIT
# An existing build directory is reconfigured with this run's MESON_ARGS (options given before
# and not now keep their values); a failure shows meson's own output.
reconf=()
[ -f "$BUILD_DIR/build.ninja" ] && reconf=(--reconfigure)
# shellcheck disable=SC2086
meson setup "${reconf[@]}" "$BUILD_DIR" ${MESON_ARGS:-} >"$log" 2>&1 || { cat "$log"; exit 2; }
# Quiet when it works; the failing commands and the compiler's messages when it does not.
ninja -C "$BUILD_DIR" >"$log" 2>&1 ||
  { grep -v '^\[[0-9]*/[0-9]*\] ' "$log" | tail -n 200; exit 2; }
echo "setup: built pgolf in $BUILD_DIR"

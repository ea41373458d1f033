#!/usr/bin/env bash
# demo.sh: the README's main job. Sets everything up, then, on the embedded default (a synthetic
# model: no downloads), writes an artifact, accounts for every byte of it and verifies it.
# This grows into shards -> train -> pack -> size -> verify as those commands land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
B=${BUILD_DIR:-build}
mkdir -p out
step() { printf '\n== %s\n' "$*"; }
start=$SECONDS
step "pgdemo: synthetic 4-layer model, SDClip int6 matrices, int8 embedding, brotli-11"
"$B/tools/pgdemo" -o out/demo.pgz --code tools/pgdemo.c
step "pgsize: every byte against the 16,000,000-byte budget"
"$B/tools/pgsize" --no-tensors out/demo.pgz
step "pgunpack --check: checksums, coverage and value ranges"
"$B/tools/pgunpack" --check out/demo.pgz
step "pgunpack --safetensors: dequantized weights for PyTorch"
"$B/tools/pgunpack" --safetensors out/demo.safetensors out/demo.pgz
printf '\ndemo: done in %d s; artifact out/demo.pgz\n' "$((SECONDS - start))"

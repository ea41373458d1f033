#!/usr/bin/env bash
# demo.sh: the README's main job. Sets everything up, prepares the embedded default data (the King
# James Bible from Debian's packages -> a SentencePiece tokenizer -> token shards, with the byte
# accounting proven), then writes an artifact (a synthetic model until pgtrain/pgpack land, with
# the real tokenizer inside), accounts for every byte of it, checks it, and re-scores it with
# pgverify (an untrained model: the score shows the pipeline, not a model).
# This grows into shards -> train -> pack -> size -> verify as those commands land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
B=${BUILD_DIR:-build}
mkdir -p out
start=$SECONDS
step() { printf '\n== %s (at %d s)\n' "$*" "$((SECONDS - start))"; }
step "data: KJV -> SentencePiece BPE (1024, byte fallback, nmt_nfkc) -> shards; prove the bytes"
bash scripts/data.sh
step "pgshard info: the validation shards"
"$B/tools/pgshard" info --model data/kjv/kjv_1024_bpe.model 'data/kjv/shards/fineweb_val_*.bin'
step "pgdemo: synthetic 4-layer model, SDClip int6 matrices, int8 embedding, brotli-11"
"$B/tools/pgdemo" -o out/demo.pgz --vocab 1024 --code tools/pgdemo.c \
  --tokenizer data/kjv/kjv_1024_bpe.model
step "pgsize: every byte against the 16,000,000-byte budget"
"$B/tools/pgsize" --no-tensors out/demo.pgz
step "pgunpack --check: checksums, coverage and value ranges"
"$B/tools/pgunpack" --check out/demo.pgz
step "pgunpack --safetensors: dequantized weights for PyTorch"
"$B/tools/pgunpack" --safetensors out/demo.safetensors out/demo.pgz
step "pgverify: re-score it on the validation shards (CPU reference; sliding 256/128 on the first 8,193 tokens)"
"$B/tools/pgverify" out/demo.pgz --val 'data/kjv/shards/fineweb_val_*.bin' --protocol sliding \
  --seq-len 256 --stride 128 --max-tokens 8193 --receipt out/demo.receipt.json
printf '\ndemo: done in %d s; artifact out/demo.pgz\n' "$((SECONDS - start))"

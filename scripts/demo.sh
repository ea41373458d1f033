#!/usr/bin/env bash
# demo.sh: the README's main job. Sets everything up, prepares the embedded default data (the King
# James Bible from Debian's packages -> a SentencePiece tokenizer -> token shards, with the byte
# accounting proven), then makes weights (a synthetic model until pgtrain lands), packs them with
# pgpack (calibration on training shards, GPTQ with SDClip, LQER, fitted to a byte budget, the real
# tokenizer inside), accounts for every byte, checks the artifact, and re-scores it with pgverify
# (an untrained model: the score shows the pipeline, not a model).
# This grows into shards -> train -> pack -> size -> verify as pgtrain lands.
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
step "pgdemo: synthetic 4-layer model of the record family (the trained weights once pgtrain lands)"
"$B/tools/pgdemo" -o out/demo.pgz --vocab 1024 --code tools/pgdemo.c \
  --tokenizer data/kjv/kjv_1024_bpe.model
"$B/tools/pgunpack" --safetensors out/demo.safetensors out/demo.pgz
step "pgpack: calibrate on training shards, GPTQ with SDClip, LQER, best codec per section, fit to 2,500,000 bytes"
"$B/tools/pgpack" --weights out/demo.safetensors --tokenizer data/kjv/kjv_1024_bpe.model \
  --code tools/pgpack.c --calib 'data/kjv/shards/fineweb_train_*.bin' --calib-seqs 8 \
  --calib-len 256 --val 'data/kjv/shards/fineweb_val_*.bin' --budget 2500000 -o out/packed.pgz
step "pgsize: every byte against the 16,000,000-byte budget"
"$B/tools/pgsize" --no-tensors out/packed.pgz
step "pgunpack --check: checksums, coverage and value ranges"
"$B/tools/pgunpack" --check out/packed.pgz
step "pgverify: re-score it on the validation shards (CPU reference; sliding 256/128 on the first 8,193 tokens)"
"$B/tools/pgverify" out/packed.pgz --val 'data/kjv/shards/fineweb_val_*.bin' --protocol sliding \
  --seq-len 256 --stride 128 --max-tokens 8193 --receipt out/packed.receipt.json
printf '\ndemo: done in %d s; artifact out/packed.pgz\n' "$((SECONDS - start))"

#!/usr/bin/env bash
# demo.sh: the README's main job, the whole pipeline on the embedded default:
#   shards -> train -> pack -> size -> verify -> legality report.
# Sets everything up (Debian packages, build), prepares the embedded default data (the King James
# Bible from Debian's packages -> a SentencePiece tokenizer -> token shards, with the byte
# accounting proven), trains a small model of the record family on the CPU (pgtrain,
# spec/examples/train-demo.json), packs it with GPTQ and SDClip fitted to a byte budget (pgpack),
# accounts for every byte (pgsize), checks it (pgunpack), and re-scores it with pgverify with
# the sliding window and with score-first TTT, and has pglegal report on its legality. Every step
# prints what it does and its time.
#
# The real thing: bash scripts/demo.sh --data 'DIR/fineweb_train_*.bin' --val
# 'DIR/fineweb_val_*.bin' --tokenizer M.model [--config your-run.json] [--budget 16000000]
# (the same settings can come from the environment: DATA, VAL, TOKENIZER, CONFIG, BUDGET).
set -euo pipefail
cd "$(dirname "$0")/.."
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --val) VAL=$2; shift 2 ;;
    --tokenizer) TOKENIZER=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh
B=${BUILD_DIR:-build}
CONFIG=${CONFIG:-spec/examples/train-demo.json}
BUDGET=${BUDGET:-700000}
VAL_TOKENS=${VAL_TOKENS:-16385}
mkdir -p out
start=$SECONDS
last=$SECONDS
step() {
  printf '\n== %s  (at %d s; the previous step took %d s)\n' "$*" "$((SECONDS - start))" \
    "$((SECONDS - last))"
  last=$SECONDS
}
if [ -z "${DATA:-}" ]; then
  step "data: KJV -> SentencePiece BPE (1024, byte fallback, nmt_nfkc) -> shards; prove the bytes"
  bash scripts/data.sh
  DATA='data/kjv/shards/fineweb_train_*.bin'
  VAL='data/kjv/shards/fineweb_val_*.bin'
  TOKENIZER=data/kjv/kjv_1024_bpe.model
fi
: "${VAL:?set VAL to the validation shards}" "${TOKENIZER:?set TOKENIZER to the .model file}"

step "pgtrain: $CONFIG on the CPU" \
  "(Muon + AdamW, EMA; validation of the untrained and the trained model)"
"$B/tools/pgtrain" --config "$CONFIG" --train "$DATA" --val "$VAL" --tokenizer "$TOKENIZER" \
  --log out/train.jsonl -o out/model.safetensors

step "pgpack: calibrate on training shards, GPTQ with SDClip, LQER, best codec per section," \
  "fit to $BUDGET bytes"
"$B/tools/pgpack" --weights out/model.safetensors --tokenizer "$TOKENIZER" \
  --code tools/pgtrain.c --calib "$DATA" --calib-seqs 16 --calib-len 256 --val "$VAL" \
  --passthrough-max 16384 --budget "$BUDGET" -o out/model.pgz

step "pgsize: every byte against the budget"
"$B/tools/pgsize" --no-tensors --budget "$BUDGET" out/model.pgz

step "pgunpack --check: checksums, coverage and value ranges"
"$B/tools/pgunpack" --check out/model.pgz

step "pgverify: sliding window 256/64 over the first $VAL_TOKENS validation tokens (CPU reference)"
"$B/tools/pgverify" out/model.pgz --val "$VAL" --protocol sliding --seq-len 256 --stride 64 \
  --max-tokens "$VAL_TOKENS" --receipt out/model.sliding.json

step "pgverify: score-first chunked TTT (SGD on each chunk after it is scored)"
"$B/tools/pgverify" out/model.pgz --val "$VAL" --protocol ttt-chunk --seq-len 256 --stride 64 \
  --chunk-tokens 4096 --max-tokens "$VAL_TOKENS" --receipt out/model.ttt.json

step "pglegal: a reviewer's report (causality, normalisation, score before update, single pass," \
  "accounting, provenance, time, reproduction)"
"$B/tools/pglegal" out/model.pgz --val "$VAL" --train "$DATA" --tokens 8192 \
  --protocol "--protocol ttt-chunk --seq-len 256 --stride 64 --chunk-tokens 4096" \
  --markdown out/model.legal.md

step "summary"
python3 - out/train.jsonl out/model.sliding.json out/model.ttt.json <<'EOF'
import json, sys
first = last = None
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("event") == "val":
        if e["weights"] == "initial":
            first = e
        last = e
sl = json.load(open(sys.argv[2]))["result"]
tt = json.load(open(sys.argv[3]))["result"]
print(f"untrained model (pgtrain, plain windows)   val_bpb {first['bpb']:.8f}")
print(f"trained model   (pgtrain, {last['weights']} weights)      val_bpb {last['bpb']:.8f}")
print(f"packed artifact (pgverify, sliding)         val_bpb {sl['val_bpb']:.8f}")
print(f"packed artifact (pgverify, score-first TTT) val_bpb {tt['val_bpb']:.8f}")
print("receipts: out/model.sliding.json, out/model.ttt.json; legality report: out/model.legal.md")
EOF
printf '\ndemo: done in %d s; artifact out/model.pgz, checkpoint out/model.safetensors\n' \
  "$((SECONDS - start))"

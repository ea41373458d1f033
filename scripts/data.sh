#!/usr/bin/env bash
# data.sh: the embedded default data set, made from Debian packages only (no downloads beyond the
# package archive; nothing of it is committed). Steps, each reproducible by hand:
#   1. the King James Bible (public domain) from Debian's bible-kjv, one document per chapter,
#      as JSON lines with a "text" field (data/kjv/docs.jsonl);
#   2. a SentencePiece BPE tokenizer trained on the training documents with the challenge's
#      settings (byte fallback, nmt_nfkc, no dummy prefix, pad/bos/eos/unk = 0/1/2/3);
#   3. pgshard encode: BOS before each document, no EOS; the first VAL_DOCS chapters are the
#      validation split (fineweb_val_*.bin), the rest training shards (fineweb_train_*.bin);
#   4. pgshard check and prove-bytes: the byte accounting of the validation set, token by token.
# Environment: DATA_DIR (default data/kjv), VOCAB (1024), VAL_DOCS (60), BUILD_DIR (build).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DATA_DIR:-data/kjv}
V=${VOCAB:-1024}
VAL_DOCS=${VAL_DOCS:-60}
B=${BUILD_DIR:-build}
need=()
command -v bible >/dev/null || need+=(bible-kjv)
command -v spm_train >/dev/null || need+=(sentencepiece)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "data: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
fi
mkdir -p "$D"
model="$D/kjv_${V}_bpe"
if [ ! -f "$D/docs.jsonl" ]; then
  echo "data: extracting the King James Bible, one document per chapter"
  bible -f "gen1:1-rev22:21" | python3 -c '
import json, re, sys
docs, key = [], None
for line in sys.stdin:
    m = re.match(r"^(\S+?)(\d+):(\d+) (.*)$", line.rstrip("\n"))
    if not m:
        continue
    k = (m.group(1), m.group(2))
    if k != key:
        docs.append([])
        key = k
    docs[-1].append(m.group(4))
for d in docs:
    print(json.dumps({"text": " ".join(d)}, ensure_ascii=False))
' > "$D/docs.jsonl.tmp"
  mv "$D/docs.jsonl.tmp" "$D/docs.jsonl"
fi
if [ ! -f "$model.model" ]; then
  echo "data: training a ${V}-piece SentencePiece BPE model on the training chapters"
  # one verse-sized line per sentence (spm_train skips lines above 4192 bytes)
  python3 -c '
import json, sys
for i, line in enumerate(open(sys.argv[1], encoding="utf-8")):
    if i < int(sys.argv[2]):
        continue
    for s in json.loads(line)["text"].split(". "):
        print(s)
' "$D/docs.jsonl" "$VAL_DOCS" > "$D/train_sentences.txt"
  spm_train --input="$D/train_sentences.txt" --model_prefix="$model" --model_type=bpe \
    --vocab_size="$V" --character_coverage=0.999 --byte_fallback=true --split_digits=true \
    --normalization_rule_name=nmt_nfkc --add_dummy_prefix=false --pad_id=0 --bos_id=1 \
    --eos_id=2 --unk_id=3 --hard_vocab_limit=false --num_threads=2 \
    >"$D/spm_train.log" 2>&1 || { tail -20 "$D/spm_train.log"; exit 2; }
  rm -f "$D/train_sentences.txt"
fi
if [ ! -f "$D/shards/fineweb_val_000000.bin" ]; then
  echo "data: encoding into shards"
  rm -rf "$D/shards"
  "$B/tools/pgshard" encode --model "$model.model" --val-docs "$VAL_DOCS" \
    --shard-tokens 262144 --out "$D/shards" "$D/docs.jsonl"
fi
"$B/tools/pgshard" check --model "$model.model" "$D/shards/fineweb_*.bin"
"$B/tools/pgshard" prove-bytes --model "$model.model" "$D/shards/fineweb_val_*.bin"

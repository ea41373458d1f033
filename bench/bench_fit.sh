#!/usr/bin/env bash
# bench_fit.sh: the loss-aware budget fit (pgpack --fit loss) against the records' recipe fit
# (pgpack --fit k: one multiplier of every clip constant, the records' bits) on a trained model,
# scored by pgverify. For each budget: both fits' counted bytes, the loss fit's expected Δloss
# (its proxy, nats per calibration token), the point the loss fit chose by measured loss on
# held-out training tokens (k: the k fit's solution) and that loss, and the measured val_loss
# and val_bpb of each artifact (plain protocol); what each fit chose (bits, clip, tensors with
# LQER); then the correlation of the proxy with the
# measured Δloss over every loss-fit point and the recipe's own point (k × 1).
#
#   bash bench/bench_fit.sh [--model FILE] [--budgets "600000 650000 700000"]
#                           [--extra "450000 500000 550000"] [--out DIR] [--threads N]
#
# --model defaults to scripts/demo.sh's out/model.safetensors.
# Environment: BUILD_DIR (default build), TOKENIZER, CALIB, VAL (the KJV defaults of data/),
# VAL_TOKENS (default: every validation token), SEQ_LEN (default 256), PASSTHROUGH (4096).
# --extra budgets are packed with the loss fit only: more points for the correlation.
# REUSE=1 keeps the results already in --out (e.g. rerun only the loss fits after a change:
# delete their loss_* files first).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=out/model.safetensors
BUDGETS="600000 650000 700000"
EXTRA=""
OUT=/tmp/bench_fit
THREADS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --budgets) BUDGETS=$2; shift 2 ;;
    --extra) EXTRA=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench_fit.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
B=${BUILD_DIR:-build}
TOKENIZER=${TOKENIZER:-data/kjv/kjv_1024_bpe.model}
CALIB=${CALIB:-data/kjv/shards/fineweb_train_*.bin}
VAL=${VAL:-data/kjv/shards/fineweb_val_*.bin}
SEQ_LEN=${SEQ_LEN:-256}
PASSTHROUGH=${PASSTHROUGH:-4096}
mkdir -p "$OUT"
MAXTOK=()
[ -n "${VAL_TOKENS:-}" ] && MAXTOK=(--max-tokens "$VAL_TOKENS")

pack() { # name fit budget
  local name=$1 fit=$2 budget=$3 extra=()
  [ "$fit" = loss ] && extra=(--fit-curve "$OUT/$name.tsv")
  [ "$budget" != none ] && extra+=(--budget "$budget" --fit "$fit")
  if [ -n "${REUSE:-}" ] && [ -s "$OUT/$name.pack.json" ]; then return 0; fi
  echo "bench_fit: pgpack $name" >&2
  "$B/tools/pgpack" --weights "$MODEL" --tokenizer "$TOKENIZER" --code tools/pgtrain.c \
    --calib "$CALIB" --calib-seqs 16 --calib-len 256 --val "$VAL" \
    --passthrough-max "$PASSTHROUGH" --threads "$THREADS" -q --json "${extra[@]}" \
    -o "$OUT/$name.pgz" > "$OUT/$name.pack.json"
}
verify() { # name [artifact or weights args...]
  local name=$1
  shift
  if [ -n "${REUSE:-}" ] && [ -s "$OUT/$name.verify.json" ]; then return 0; fi
  echo "bench_fit: pgverify $name" >&2
  "$B/tools/pgverify" "$@" --val "$VAL" --protocol plain --seq-len "$SEQ_LEN" "${MAXTOK[@]}" \
    --threads "$THREADS" --no-receipt --json -q > "$OUT/$name.verify.json"
}

verify fp "$MODEL" --tokenizer "$TOKENIZER"
pack recipe k none
verify recipe "$OUT/recipe.pgz"
for b in $BUDGETS; do
  pack "k_$b" k "$b"
  verify "k_$b" "$OUT/k_$b.pgz"
done
for b in $BUDGETS $EXTRA; do
  pack "loss_$b" loss "$b"
  verify "loss_$b" "$OUT/loss_$b.pgz"
done

python3 - "$OUT" "$BUDGETS" "$EXTRA" <<'EOF'
import json, math, sys
out, budgets, extra = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def ver(n):
    return json.load(open(f"{out}/{n}.verify.json"))["result"]
def pk(n):
    return json.load(open(f"{out}/{n}.pack.json"))
fp = ver("fp")
print(f"model: fp32 weights val_loss {fp['val_loss']:.6f} val_bpb {fp['val_bpb']:.6f} "
      f"({int(fp['targets'])} validation targets, plain protocol)")
print()
print(f"{'budget':>9} {'fit':<6} {'counted':>9} {'proxy dloss':>12} {'pick':<7} "
      f"{'held-out':>9} {'val_loss':>10} {'dloss meas.':>12} {'val_bpb':>10} {'dbpb':>9}")
rows = []  # (proxy, measured) pairs
def line(budget, fit, name, proxy):
    v, p = ver(name), pk(name)
    if not isinstance(proxy, (int, float)):
        proxy = None  # "NaN": the k point has no expected loss
    d = v["val_loss"] - fp["val_loss"]
    ps = f"{proxy:12.6f}" if proxy is not None else f"{'-':>12}"
    f = p.get("fit") or {}
    pick = f.get("kind", "-") if fit == "loss" else "-"
    ho = f.get("measured_loss") if fit == "loss" else None
    hs = f"{ho:9.5f}" if ho is not None else f"{'-':>9}"
    print(f"{budget:>9} {fit:<6} {p['counted_bytes']:>9} {ps} {pick:<7} {hs} "
          f"{v['val_loss']:10.6f} {d:12.6f} {v['val_bpb']:10.6f} "
          f"{v['val_bpb'] - fp['val_bpb']:9.6f}")
    if proxy is not None:
        rows.append((proxy, d))
# the recipe (k x 1): its proxy is the recipe point of any loss fit's curve
recipe_proxy = None
for b in budgets + extra:
    for l in open(f"{out}/loss_{b}.tsv"):
        f = l.rstrip("\n").split("\t")
        if f[0] == "recipe":
            recipe_proxy = float(f[5])
    break
line("-", "recipe", "recipe", recipe_proxy)
for b in budgets:
    line(b, "k", f"k_{b}", None)
    line(b, "loss", f"loss_{b}", pk(f"loss_{b}")["fit"]["dloss"])
for b in extra:
    line(b, "loss", f"loss_{b}", pk(f"loss_{b}")["fit"]["dloss"])
# what each fit chose: the quant tensors' bits, the k multiplier or the per-tensor clip factors,
# and the tensors LQER corrects
def chose(name):
    p = pk(name)
    q = [t for t in p["tensors"] if t.get("route") == "quant"]
    bits = {}
    for t in q:
        bits[t["bits"]] = bits.get(t["bits"], 0) + 1
    bs = " ".join(f"{b}b:{bits[b]}" for b in sorted(bits))
    k1 = {t["name"]: t["k"] for t in pk("recipe")["tensors"] if t.get("route") == "quant"}
    kf = sorted({round(t["k"] / k1[t["name"]], 2) for t in q})
    ks = f"k x{p['k_multiplier']:.3g}" if len(kf) == 1 else "f " + ",".join(f"{x:g}" for x in kf)
    lq = sum(1 for t in q if t.get("lqer_rank"))
    return f"{bs}; {ks}; LQER on {lq}"
print()
for b in budgets + extra:
    for fit in ("k", "loss"):
        n = f"{fit}_{b}"
        try:
            print(f"{b:>9} {fit:<5} chose: {chose(n)}")
        except (OSError, KeyError):
            pass
if len(rows) >= 3:
    xs, ys = [r[0] for r in rows], [r[1] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in rows)
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    r = sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")
    def ranks(v):
        o = sorted(range(len(v)), key=lambda i: v[i])
        rk = [0] * len(v)
        for i, j in enumerate(o):
            rk[j] = i
        return rk
    rx, ry = ranks(xs), ranks(ys)
    n = len(rows)
    rho = 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry)) / (n * (n * n - 1))
    print()
    print(f"proxy vs measured dloss over {n} points: Pearson r {r:.3f}, Spearman rho {rho:.3f}")
EOF

#!/usr/bin/env bash
# test_gpu_check.sh SOURCE_ROOT BUILD_ROOT: scripts/gpu-check.sh itself, on the programs of this
# build (--build, --quick), so that a break of the script shows in CI, which has no GPU: it must
# print its table with a row for every check and a verdict, and exit 3 without a GPU (0 with one);
# its usage errors exit 2; every program it lists is built here; on stand-ins that act as on a GPU
# machine it passes (exit 0) or fails (exit 1) as they do. TAP on stdout.
set -uo pipefail
src=$1
build=$2
script="$src/scripts/gpu-check.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_gpu_check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; shift
  for l in "$@"; do echo "# $l"; done
}
check() { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }

# the programs it lists are targets of this build
progs=$(bash "$script" --list-programs)
check "--list-programs names programs" test -n "$progs"
check "--list-programs names each program once" test -z "$(sort <<<"$progs" | uniq -d)"
for p in $progs; do
  check "$p is built" test -x "$build/$p"
done

# the checks' rows: Criterion test programs, then benchmarks
test_rows="dequant-kernels cuda-load cuda-engine cuda-multi cuda-engine-bwd"
bench_rows="bench-dequant bench-gpu-eval bench-gpu-ttt bench-gpu-train"

# the whole run on this build's programs
out=$(bash "$script" --build "$build" --quick --budget 120 --logs "$tmp/logs" 2>&1)
rc=$?
if [ $rc = 3 ] || [ $rc = 0 ]; then
  ok "exit status 3 (no GPU) or 0 (GPU): $rc"
else
  not_ok "exit status 3 (no GPU) or 0 (GPU): $rc" "$(echo "$out" | tail -n 30)"
fi
check "table header" grep -qxF '| check | result | figure | s |' <<<"$out"
for row in machine programs gpu $test_rows $bench_rows; do
  check "table row $row" grep -q "^| $row | " <<<"$out"
done
if [ $rc = 3 ]; then
  check "no GPU: the GPU rows say so" grep -q '^| dequant-kernels | no GPU | ' <<<"$out"
  check "no GPU: the benchmark's CPU figure" \
    grep -q '^| bench-dequant | no GPU | .*cpu [0-9.]* GB/s' <<<"$out"
  check "no GPU: the eval benchmark's CPU figures (or its skip without PyTorch)" \
    grep -Eq '^\| bench-gpu-eval \| no GPU \| (cpu: pgverify [0-9]+ tok/s '\
'.*torch [0-9]+ tok/s.*dloss|skipped \(no PyTorch\))' <<<"$out"
  check "no GPU: the training benchmark's CPU figures (or its skip without PyTorch)" \
    grep -Eq '^\| bench-gpu-train \| no GPU \| (cpu: pgtrain [0-9]+ tok/s, torch [0-9]+ tok/s|'\
'skipped \(no PyTorch\))' <<<"$out"
  check "no GPU: verdict" grep -q '^verdict: NO GPU: ' <<<"$out"
else
  check "GPU: verdict" grep -q '^verdict: PASS: ' <<<"$out"
fi
check "the verdict is the last line" test "$(echo "$out" | tail -n 1 | cut -c1-8)" = "verdict:"
check "the log holds what it printed" cmp -s <(echo "$out") "$tmp/logs/gpu-check.log"
check "the details log names each step" \
  grep -q '^==== bench-dequant: ' "$tmp/logs/gpu-check-details.log"

# The GPU branches, on stand-ins for the programs that behave as on a GPU machine: every listed
# test program answers --list and prints Criterion's synthesis, every benchmark its summary line;
# STUB_FAIL makes the test programs fail.
fake="$tmp/fake"
for p in $progs; do
  mkdir -p "$fake/$(dirname "$p")"
  case $p in
    tests/*) cat >"$fake/$p" <<'EOF'
#!/bin/sh
[ "$1" = --list ] && { echo "gpu: 3 tests"; exit 0; }
if [ -n "${STUB_FAIL:-}" ]; then
  echo "[====] Synthesis: Tested: 3 | Passing: 2 | Failing: 1 | Crashing: 0"; exit 1
fi
[ "${PG_REQUIRE_GPU:-}" = 1 ] || { echo "PG_REQUIRE_GPU not set"; exit 1; }
echo "[====] Synthesis: Tested: 3 | Passing: 3 | Failing: 0 | Crashing: 0"
EOF
    ;;
    *) cat >"$fake/$p" <<'EOF'
#!/bin/sh
[ "$1" = --help ] && exit 0
echo "summary: bit-exact; stand-in 123.4 GB/s"
EOF
    ;;
  esac
  chmod +x "$fake/$p"
done
out=$(bash "$script" --build "$fake" 2>&1)
rc=$?
check "GPU stand-ins: exit 0" test $rc = 0
check "GPU stand-ins: gpu present" grep -q '^| gpu | present | ' <<<"$out"
check "GPU stand-ins: test row passes" \
  grep -q '^| dequant-kernels | pass | 3/3 tests passed | ' <<<"$out"
check "GPU stand-ins: bench row passes with its figure" \
  grep -q '^| bench-dequant | pass | bit-exact; stand-in 123.4 GB/s | ' <<<"$out"
ntests=$(wc -w <<<"$test_rows")
nall=$((ntests + $(wc -w <<<"$bench_rows")))
check "GPU stand-ins: verdict PASS" grep -q "^verdict: PASS: all $nall GPU checks passed" <<<"$out"
out=$(STUB_FAIL=1 bash "$script" --build "$fake" 2>&1)
rc=$?
check "GPU stand-ins failing: exit 1" test $rc = 1
check "GPU stand-ins failing: the row" \
  grep -q '^| dequant-kernels | FAIL | exit 1: 2/3 tests passed, 1 failing, 0 crashing | ' <<<"$out"
check "GPU stand-ins failing: verdict" \
  grep -q "^verdict: FAIL: $ntests check(s) failed, $((nall - ntests)) passed" <<<"$out"

# usage errors and a missing bundle
bash "$script" --no-such-option >/dev/null 2>&1
check "unknown option: exit 2" test $? = 2
out=$(bash "$script" --bundle "$tmp/none" 2>&1)
rc=$?
check "missing bundle: exit 2" test $rc = 2
check "missing bundle: says how to make one" grep -q 'scripts/gpu-bundle.sh' <<<"$out"

echo "1..$n"
exit $((fails > 0))

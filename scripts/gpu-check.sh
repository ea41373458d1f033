#!/usr/bin/env bash
# gpu-check.sh: the GPU check, one command for a GPU machine (README.md, "GPU check"). Run from the
# repository root with the bundle that scripts/gpu-bundle.sh made (.gpu/) beside it: it checks that
# the bundled programs run there (else builds them from source with the bundle's packages), runs
# every GPU test program and benchmark listed in checks() below, reads the GPU's facts from
# nvidia-smi, and prints one table (check, result, figure, seconds) and a one-line verdict.
# Everything it prints also goes to $OUT/gpu-check.log, and each step's full output to
# $OUT/gpu-check-details.log, when OUT is set (or --logs DIR).
#
# Without a GPU it runs what runs on a CPU (the test programs must skip, the benchmarks print their
# CPU rows at a small size), reports the GPU rows as "no GPU" and exits 3, in a few seconds.
# Exit status: 0 every check passed on a GPU; 1 a check failed; 2 usage error or nothing to run;
# 3 no GPU here (everything that could run without one passed).
set -uo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

# ---- the checks: one line each ---------------------------------------------------------------
# gpu_test NAME TIMEOUT PROGRAM [ARGS...]: a Criterion GPU test program whose main exits 77 without
#   a device (tests/test_gpu.c); it runs with PG_REQUIRE_GPU=1 where a GPU is present.
# gpu_bench NAME TIMEOUT PROGRAM [ARGS...]: a benchmark that prints its table and a last "summary:"
#   line, accepts --small and --repeat N, and prints its CPU rows without a GPU. A PROGRAM named
#   *.py is a script (its interpreter is the machine's, not the bundle's): it runs without the
#   bundle's LD_LIBRARY_PATH and gets the bundle's libraries in PGOLF_LIBRARY_PATH instead.
# gpu_prog PROGRAM: a program the benchmarks run (bundled, checked to start; no row of its own).
# PROGRAM is the target's path in a build directory; scripts/gpu-bundle.sh bundles exactly these.
# TIMEOUT is in seconds; the whole run must stay under 6 minutes on one H100 (--budget).
# cuda-load: an artifact loaded onto the CUDA engine (its matrices dequantized by the device)
# gives the host path's parameters bit for bit (spec/engine.md §8.1); seconds.
# bench-gpu-eval: 64 windows of the R9-class model (1.9e13 FLOP; pgverify stopped after 40 s, a
# failure), torch.compile's first pass untimed inside the 90 s; its val_loss difference must stay
# below 0.05 (a gross fault only).
# bench-gpu-ttt: R9's score-first TTT on 16,384 targets (two chunks of 8,192: one trained), the
# projection for the full validation set in its figure; pgverify stopped after 50 s.
# bench-gpu-train: 3 steps of 4 x 2048 tokens of the same model (2 timed), pgtrain in bf16 (its
# tensor-core products, forward and backward; spec/train.md §10) against PyTorch (bf16,
# torch.compile); pgtrain stopped after 60 s. No fp32 row here: the exact kernels' fp64 sums are
# slow at this size (bench_gpu_train.py --pgtrain-precision bf16,fp32 adds one).
checks() {
  gpu_test dequant-kernels 120 tests/test_gpu
  gpu_test cuda-load 60 tests/test_gpu_load
  gpu_test cuda-engine 150 tests/test_gpu_engine
  gpu_test cuda-multi 60 tests/test_gpu_multi
  gpu_test cuda-engine-bwd 150 tests/test_gpu_engine_bwd
  gpu_bench bench-dequant 120 bench/bench_dequant --repeat 3
  gpu_prog tools/pgverify
  gpu_bench bench-gpu-eval 90 bench/bench_gpu_eval.py --windows 64 --batch 16 --check 0.05 \
    --pgverify-timeout 40
  gpu_bench bench-gpu-ttt 60 bench/bench_gpu_eval.py --protocol ttt-chunk --windows 225 \
    --chunk-tokens 8192 --batch 16 --pgverify-timeout 50
  gpu_prog tools/pgtrain
  gpu_bench bench-gpu-train 90 bench/bench_gpu_train.py --steps 3 --batch 4 --pgtrain-timeout 60 \
    --pgtrain-precision bf16
}

usage() {
  cat <<'EOF'
usage: scripts/gpu-check.sh [--bundle DIR] [--build DIR] [--from-source] [--quick]
                            [--budget SECONDS] [--logs DIR] [--list-programs]
  --bundle DIR      the bundle of scripts/gpu-bundle.sh (default .gpu)
  --build DIR       use the programs of this meson build directory instead of a bundle
  --from-source     build from source with the bundle's packages even if its programs run
  --quick           benchmarks at their small size, one pass (a check of this script itself)
  --budget SECONDS  the whole run's time limit (default 330); each step gets what is left
  --logs DIR        where gpu-check.log and gpu-check-details.log go (default $OUT when set)
  --list-programs   print the programs the checks run (build paths), one a line, and exit
EOF
}

BUNDLE=.gpu
BUILD=""
FROM_SOURCE=0
QUICK=0
BUDGET=330
LOGS=${OUT:-}
LIST=0
FALLBACK=0
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) BUNDLE=$(abspath "${2:?--bundle needs a directory}"); shift 2 ;;
    --build) BUILD=$(abspath "${2:?--build needs a directory}"); shift 2 ;;
    --from-source) FROM_SOURCE=1; shift ;;
    --quick) QUICK=1; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    --logs) LOGS=$(abspath "${2:?--logs needs a directory}"); shift 2 ;;
    --list-programs) LIST=1; shift ;;
    --_fallback) FALLBACK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $BUDGET =~ ^[0-9]+$ ]] ||
  { echo "gpu-check: --budget: whole seconds, not '$BUDGET'" >&2; exit 2; }
# Paths given are taken from where the script was started; it runs from the repository root.
[ -n "$LOGS" ] && LOGS=$(abspath "$LOGS")
cd "$(dirname "$SELF")/.." || exit 2
BUNDLE=$(abspath "$BUNDLE")

# The checks' programs as "KIND PATH" lines (KIND test, bench or prog), each program once (one
# program may run for several checks: bench_gpu_eval.py for bench-gpu-eval and bench-gpu-ttt).
programs() { (gpu_test() { echo "test $3"; }; gpu_bench() { echo "bench $3"; }
              gpu_prog() { echo "prog $1"; }; checks) | awk '!seen[$2]++'; }

if [ "$LIST" = 1 ]; then
  programs | cut -d' ' -f2
  exit 0
fi

MULTI=x86_64-linux-gnu
T0=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
left() { awk -v a="$T0" -v b="$(date +%s.%N)" -v t="$BUDGET" 'BEGIN { printf "%d", t - (b - a) }'; }
say() { echo "gpu-check: $*"; }

# ---- the table ---------------------------------------------------------------------------------
ROWS_CHECK=() ROWS_RESULT=() ROWS_FIGURE=() ROWS_SECS=()
row() { ROWS_CHECK+=("$1"); ROWS_RESULT+=("$2"); ROWS_FIGURE+=("$3"); ROWS_SECS+=("$4"); }
FAILED=0   # checks that failed
PASSED=0   # GPU checks that passed
NOGPU=0    # GPU checks that could not run for want of a GPU

# Run one step: its full output to the details log, rc and seconds in STEP_RC / STEP_SECS,
# its output in STEP_OUT. A step gets min(TIMEOUT, what the budget has left - 5) seconds.
STEP_RC=0 STEP_SECS=0 STEP_OUT=""
step() {
  local name=$1 limit=$2
  shift 2
  local avail
  avail=$(($(left) - 5))
  [ "$avail" -lt "$limit" ] && limit=$avail
  if [ "$limit" -lt 1 ]; then
    STEP_RC=124 STEP_SECS=0 STEP_OUT="not started: the budget of $BUDGET s is spent"
    return
  fi
  local t
  t=$(date +%s.%N)
  STEP_OUT=$(timeout -k 5 "$limit" "$@" 2>&1)
  STEP_RC=$?
  STEP_SECS=$(elapsed "$t")
  { echo "==== $name: $* (exit $STEP_RC, $STEP_SECS s, limit $limit s)"; echo "$STEP_OUT"; } \
    >>"$DETAILS"
}

# ---- where the programs come from ----------------------------------------------------------------
# MODE bundle: $BUNDLE/bin/NAME; build (--build DIR) and fallback (the build from source): DIR/PATH.
# RUNENV: the env command that runs them (the bundle's shared libraries unless --build).
MODE="" PROGDIR="" RUNENV=(env) LIBDIR=""
set_mode() {
  MODE=$1 PROGDIR=$2 RUNENV=(env) LIBDIR=""
  if [ "$MODE" != build ] && [ -d "$BUNDLE/lib" ]; then
    LIBDIR=$BUNDLE/lib
    RUNENV=(env "LD_LIBRARY_PATH=$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  fi
}
prog() { if [ "$MODE" = bundle ]; then echo "$PROGDIR/bin/${1##*/}"; else echo "$PROGDIR/$1"; fi; }
# RUN: the env command that runs program $1 (a *.py script: without the bundle's libraries).
RUN=()
set_run() {
  if [[ $1 == *.py ]]; then RUN=(env "PGOLF_LIBRARY_PATH=$LIBDIR"); else RUN=("${RUNENV[@]}"); fi
}

# Each program starts (a test program lists its tests, a benchmark prints its help): 0, or 1 with
# the first failure's output in STEP_OUT.
programs_start() {
  local kind p rc out
  while read -r kind p; do
    local exe
    exe=$(prog "$p")
    if [ ! -x "$exe" ]; then STEP_OUT="$exe: missing"; return 1; fi
    if [ "$kind" = test ]; then
      out=$(timeout 30 "${RUNENV[@]}" "$exe" --list 2>&1)
      rc=$?
      [ $rc = 0 ] || [ $rc = 77 ] || { STEP_OUT="$exe (exit $rc): $out"; return 1; }
    else
      set_run "$p"
      out=$(timeout 30 "${RUN[@]}" "$exe" --help 2>&1)
      rc=$?
      [ $rc = 0 ] || { STEP_OUT="$exe (exit $rc): $out"; return 1; }
    fi
  done < <(programs)
  return 0
}

# The build from source with the bundle's packages (for a machine where the bundle cannot run),
# into build-gpu-here; run as its own process (--_fallback), so that step can time it out.
fallback_build() {
  local S="$BUNDLE/sysroot" dir=build-gpu-here
  [ -d "$S" ] || { echo "no $BUNDLE/sysroot"; return 2; }
  set -e
  [ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
  export PKG_CONFIG_LIBDIR="$S/usr/lib/$MULTI/pkgconfig:$S/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$S"
  export LIBRARY_PATH="$S/usr/lib/$MULTI${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$BUNDLE/lib:$S/usr/lib/$MULTI${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  command -v pkg-config >/dev/null || export PKG_CONFIG="$S/usr/bin/pkgconf"
  local meson=(meson) ninja=(ninja)
  command -v meson >/dev/null || meson=(python3 -m mesonbuild.mesonmain)
  command -v ninja >/dev/null || ninja=(python3 -m ninja)
  local arch
  arch=$(awk '$1 == "cuda-arch" {print $2}' "$BUNDLE/MANIFEST" 2>/dev/null)
  local opts=(-Dcuda=enabled "-Dcuda-arch=${arch:-90}" -Dprefer_static=true -Dbuildtype=release)
  # afresh: a reconfigured directory would keep the libraries it found before
  rm -rf "$dir"
  "${meson[@]}" setup "$dir" "${opts[@]}"
  local targets
  mapfile -t targets < <(programs | cut -d' ' -f2)
  "${ninja[@]}" -C "$dir" "${targets[@]}"
}
if [ "$FALLBACK" = 1 ]; then
  fallback_build
  exit $?
fi

main() {
  say "started $(date -u +%Y-%m-%dT%H:%M:%SZ) in $PWD, budget $BUDGET s"

  # -- the machine
  local os glibc ncpu
  os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  ncpu=$(nproc 2>/dev/null || echo '?')
  row machine info "$(uname -m), ${os:-?}, glibc ${glibc:-?}, $ncpu CPUs" 0.0
  { echo "==== machine"; uname -a; cat /etc/os-release 2>/dev/null
    command -v nvcc && nvcc --version
    command -v meson && meson --version; } >>"$DETAILS" 2>&1

  # -- nvidia-smi's facts (read-only queries)
  local smi="" t
  t=$(date +%s.%N)
  local q=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem
  q=$q,pstate,temperature.gpu,power.draw
  if command -v nvidia-smi >/dev/null; then
    smi=$(timeout 20 nvidia-smi --query-gpu=$q --format=csv,noheader,nounits 2>&1) || smi="ERR $smi"
    { echo "==== nvidia-smi -q"; timeout 20 nvidia-smi -q; } >>"$DETAILS" 2>&1
  fi
  local smi_fig
  if [ -z "$smi" ]; then
    smi_fig="nvidia-smi not found"
  elif [[ $smi == ERR* ]]; then
    smi_fig="nvidia-smi failed: $(echo "${smi#ERR }" | head -n 1)"
  else
    smi_fig=$(echo "$smi" | awk -F', *' '{
      printf "%s%s, driver %s, %s MiB, SM %s MHz (max %s), mem %s MHz (max %s), %s, %s C, %s W",
        (NR > 1 ? "; " : ""), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }')
  fi
  local smi_secs
  smi_secs=$(elapsed "$t")

  # -- the programs: a build directory, the bundle, or the fallback build
  local bundle_note=""
  if [ -n "$BUILD" ]; then
    set_mode build "$BUILD"
    if programs_start; then
      row programs ok "from the build directory $BUILD" 0.0
    else
      row programs FAIL "$(echo "$STEP_OUT" | head -n 2 | tr '\n' ' ')" 0.0
      FAILED=$((FAILED + 1))
      return 2
    fi
  else
    if [ ! -f "$BUNDLE/MANIFEST" ]; then
      say "no bundle at $BUNDLE" \
        "(make it with scripts/gpu-bundle.sh on the CPU machine and carry it)"
      row bundle FAIL "no $BUNDLE/MANIFEST" 0.0
      FAILED=$((FAILED + 1))
      return 2
    fi
    local need commit
    need=$(awk '$1 == "glibc-required" {print $2}' "$BUNDLE/MANIFEST")
    commit=$(awk '$1 == "commit" {print $2}' "$BUNDLE/MANIFEST")
    bundle_note="commit $commit, needs glibc $need, here ${glibc:-?}"
    set_mode bundle "$BUNDLE"
    t=$(date +%s.%N)
    if [ "$FROM_SOURCE" = 0 ] && programs_start; then
      row bundle ok "$bundle_note" "$(elapsed "$t")"
    else
      if [ "$FROM_SOURCE" = 1 ]; then
        row bundle "not used" "--from-source; $bundle_note" "$(elapsed "$t")"
      else
        say "the bundled programs do not run here: $(echo "$STEP_OUT" | head -n 3)"
        row bundle "cannot run" "$(echo "$STEP_OUT" | head -n 1 | cut -c1-120)" "$(elapsed "$t")"
      fi
      say "building from source with $BUNDLE/sysroot (at most $(($(left) - 60)) s)"
      step fallback-build $(($(left) - 60)) bash "$SELF" --_fallback --bundle "$BUNDLE"
      if [ "$STEP_RC" != 0 ]; then
        echo "$STEP_OUT" | tail -n 30
        row fallback-build FAIL "exit $STEP_RC; see gpu-check-details.log" "$STEP_SECS"
        FAILED=$((FAILED + 1))
        return 2
      fi
      set_mode fallback build-gpu-here
      if programs_start; then
        row fallback-build ok "built in build-gpu-here with the bundle's packages" "$STEP_SECS"
      else
        row fallback-build FAIL "built, but: $(echo "$STEP_OUT" | head -n 1 | cut -c1-120)" \
          "$STEP_SECS"
        FAILED=$((FAILED + 1))
        return 2
      fi
    fi
  fi

  # -- is there a usable GPU? The first test program's own probe decides (exit 77: no device).
  local first_test probe_rc
  first_test=$(programs | awk '$1 == "test" {print $2; exit}')
  step gpu-probe 60 "${RUNENV[@]}" "$(prog "$first_test")" --list
  probe_rc=$STEP_RC
  HAVE_GPU=0
  if [ "$probe_rc" = 0 ]; then
    HAVE_GPU=1
    row gpu present "$smi_fig" "$smi_secs"
  elif [ "$probe_rc" = 77 ]; then
    row gpu "no GPU" "$(echo "$STEP_OUT" | grep -m1 test_gpu || echo 'no CUDA device'); $smi_fig" \
      "$smi_secs"
  else
    row gpu FAIL \
      "CUDA probe exit $probe_rc: $(echo "$STEP_OUT" | tail -n 1 | cut -c1-100); $smi_fig" \
      "$smi_secs"
    FAILED=$((FAILED + 1))
    HAVE_GPU=1  # nvidia-smi or the runtime saw something: run the checks, they show the fault
  fi

  # -- the checks
  gpu_test() {
    local name=$1 limit=$2 p=$3
    shift 3
    local exe
    exe=$(prog "$p")
    say "$name: $p${*:+ $*} ..."
    local req=()
    [ "$HAVE_GPU" = 1 ] && req=(PG_REQUIRE_GPU=1)
    step "$name" "$limit" "${RUNENV[@]}" "${req[@]}" CRITERION_JOBS=1 "$exe" -j1 "$@"
    local syn fig
    syn=$(echo "$STEP_OUT" |
          grep -o 'Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]* | Crashing: [0-9]*' |
          tail -n 1)
    if [ -n "$syn" ]; then
      fig=$(echo "$syn" | awk -F'[:|] *' '{ printf "%d/%d tests passed", $4, $2;
        if ($6 + $8 > 0) printf ", %d failing, %d crashing", $6, $8 }')
    else
      fig=$(echo "$STEP_OUT" | tail -n 1 | cut -c1-120)
    fi
    echo "$STEP_OUT" | grep -E 'Synthesis|test_gpu:' | sed 's/^/  /'
    if [ "$HAVE_GPU" = 0 ] && [ "$STEP_RC" = 77 ]; then
      row "$name" "no GPU" "skipped itself: $(echo "$STEP_OUT" | tail -n 1 | cut -c1-100)" \
        "$STEP_SECS"
      NOGPU=$((NOGPU + 1))
    elif [ "$HAVE_GPU" = 1 ] && [ "$STEP_RC" = 0 ]; then
      row "$name" pass "$fig" "$STEP_SECS"
      PASSED=$((PASSED + 1))
    else
      [ "$STEP_RC" = 124 ] && fig="timed out; $fig"
      echo "$STEP_OUT" | tail -n 40 | sed 's/^/  | /'
      row "$name" FAIL "exit $STEP_RC: $fig" "$STEP_SECS"
      FAILED=$((FAILED + 1))
    fi
  }
  gpu_bench() {
    local name=$1 limit=$2 p=$3
    shift 3
    local args=("$@")
    [ "$HAVE_GPU" = 0 ] || [ "$QUICK" = 1 ] && args+=(--small --repeat 1)
    say "$name: $p ${args[*]} ..."
    set_run "$p"
    step "$name" "$limit" "${RUN[@]}" "$(prog "$p")" "${args[@]}"
    echo "$STEP_OUT" | grep -v "^${p##*/}: " | sed 's/^/  /'
    local fig
    fig=$(echo "$STEP_OUT" | grep '^summary: ' | tail -n 1)
    fig=${fig#summary: }
    if [ "$STEP_RC" = 0 ] && [ -n "$fig" ]; then
      if [ "$HAVE_GPU" = 1 ]; then
        row "$name" pass "$fig" "$STEP_SECS"
        PASSED=$((PASSED + 1))
      else
        row "$name" "no GPU" "$fig" "$STEP_SECS"
        NOGPU=$((NOGPU + 1))
      fi
    else
      [ "$STEP_RC" = 124 ] && fig="timed out; $fig"
      echo "$STEP_OUT" | tail -n 20 | sed 's/^/  | /'
      row "$name" FAIL "exit $STEP_RC: ${fig:-$(echo "$STEP_OUT" | tail -n 1 | cut -c1-120)}" \
        "$STEP_SECS"
      FAILED=$((FAILED + 1))
    fi
  }
  gpu_prog() { :; }
  checks

  # -- the clocks after the checks
  if [ "$HAVE_GPU" = 1 ] && command -v nvidia-smi >/dev/null; then
    local after why
    after=$(timeout 20 nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw \
            --format=csv,noheader,nounits 2>/dev/null | head -n 1 |
            awk -F', *' '{ printf "SM %s MHz, mem %s MHz, %s C, %s W", $1, $2, $3, $4 }')
    # the field's name changed across drivers; either may be refused
    why=$(timeout 20 nvidia-smi --query-gpu=clocks_event_reasons.active --format=csv,noheader \
            2>/dev/null ||
          timeout 20 nvidia-smi --query-gpu=clocks_throttle_reasons.active --format=csv,noheader \
            2>/dev/null)
    [ -n "$why" ] && after="$after, clock event reasons $(echo "$why" | head -n 1)"
    row clocks-after info "${after:-nvidia-smi gave nothing}" 0.0
  fi
}

# Print the table as Markdown and the verdict; return the exit status.
finish() {
  local rc=$1 total
  total=$(elapsed "$T0")
  echo
  echo "| check | result | figure | s |"
  echo "|---|---|---|---:|"
  local i
  for i in "${!ROWS_CHECK[@]}"; do
    printf '| %s | %s | %s | %s |\n' "${ROWS_CHECK[$i]}" "${ROWS_RESULT[$i]}" \
      "${ROWS_FIGURE[$i]//|//}" "${ROWS_SECS[$i]}"
  done
  local where=""
  [ -n "$LOGS" ] && where=" (logs: $LOGS/gpu-check.log, $LOGS/gpu-check-details.log)"
  if [ "$rc" = 2 ]; then
    echo "verdict: ERROR: the GPU programs could not be made to run here, ${total} s$where"
    return 2
  elif [ "$FAILED" -gt 0 ]; then
    echo "verdict: FAIL: $FAILED check(s) failed, $PASSED passed, ${total} s$where"
    return 1
  elif [ "$HAVE_GPU" = 0 ]; then
    echo "verdict: NO GPU: $NOGPU GPU check(s) owed; what runs on a CPU passed, ${total} s$where"
    return 3
  fi
  echo "verdict: PASS: all $PASSED GPU checks passed, ${total} s$where"
  return 0
}

HAVE_GPU=0
if [ -n "$LOGS" ]; then
  mkdir -p "$LOGS" || exit 2
  DETAILS="$LOGS/gpu-check-details.log"
  LOGFILE="$LOGS/gpu-check.log"
else
  DETAILS=/dev/null
  LOGFILE=/dev/null
fi
: >"$DETAILS"
{
  main
  finish $?
} 2>&1 | tee "$LOGFILE"
exit "${PIPESTATUS[0]}"

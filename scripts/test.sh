#!/usr/bin/env bash
# test.sh: the README's test command. Sets everything up, builds, runs every test program
# (`meson test`: the CPU suites, and the GPU suite, which skips without a GPU), and ends with
# one line "N passed, N failed, N skipped" counting individual test cases.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
B=${BUILD_DIR:-build}
# the embedded default data (KJV shards): the packing tests calibrate on real text with it
BUILD_DIR="$B" bash scripts/data.sh
rc=0
meson test -C "$B" --print-errorlogs --num-processes 2 || rc=$?
python3 scripts/summarize.py "$B/meson-logs/testlog.json"
exit $rc

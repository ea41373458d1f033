#!/usr/bin/env python3
"""run_sanitized.py BUILD_DIR: run every test program of a sanitizer build directly.

Criterion runs each test in a worker process; in TAP mode it swallows the workers' standard error,
and a worker that leaks still passes. So here each program runs with Criterion's normal output,
CRITERION_NO_EARLY_EXIT=1 (so LeakSanitizer runs at the end of each worker), and any
AddressSanitizer, LeakSanitizer or UBSan report in its output fails it. Prints one line per
program and, last, 'passed=N failed=N skipped=N' for summarize.py."""
import os
import re
import subprocess
import sys

build = sys.argv[1]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
env = dict(os.environ)
env.update({
    "CRITERION_NO_EARLY_EXIT": "1",
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "PG_SOURCE_ROOT": root,
    "PG_BUILD_ROOT": os.path.abspath(build),
    "PG_FIXTURES": os.path.join(root, "..", "shared", "fixtures"),
})
REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")
SYNTH = re.compile(r"Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)")
passed = failed = skipped = 0
tests_dir = os.path.join(build, "tests")
for name in sorted(os.listdir(tests_dir)):
    exe = os.path.join(tests_dir, name)
    if not name.startswith("test_") or not os.access(exe, os.X_OK) or os.path.isdir(exe):
        continue
    p = subprocess.run([exe, "-j1"], env=env, capture_output=True, text=True, errors="replace")
    out = p.stdout + p.stderr
    if p.returncode == 77:
        print(f"sanitized {name}: skipped")
        skipped += 1
        continue
    m = SYNTH.search(out)
    tested, ok = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    reports = REPORT.findall(out)
    bad = tested - ok
    if reports or p.returncode != 0 or not m:
        bad = max(bad, 1)
        print(f"sanitized {name}: FAILED (exit {p.returncode}, {len(reports)} sanitizer reports)")
        print("\n".join(out.splitlines()[-60:]))
    else:
        print(f"sanitized {name}: {ok}/{tested} passed, no sanitizer reports")
    passed += ok if not reports else max(ok - 1, 0)
    failed += bad
print(f"passed={passed} failed={failed} skipped={skipped}")
sys.exit(1 if failed else 0)

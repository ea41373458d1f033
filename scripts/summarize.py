#!/usr/bin/env python3
"""summarize.py: count test cases across meson test logs and print 'N passed, N failed, N skipped'.

Each argument is a meson-logs/testlog.json. A TAP test program (Criterion with --tap) counts each
of its 'ok' / 'not ok' lines (a '# SKIP' directive counts as skipped); any other program counts
once by its result. Extra counts can be added as passed=N / failed=N arguments (the fuzz runs).
Exit status 1 when anything failed."""
import json
import os
import re
import sys

passed = failed = skipped = 0
for arg in sys.argv[1:]:
    m = re.fullmatch(r"(passed|failed|skipped)=(\d+)", arg)
    if m:
        n = int(m.group(2))
        if m.group(1) == "passed":
            passed += n
        elif m.group(1) == "failed":
            failed += n
        else:
            skipped += n
        continue
    if not os.path.exists(arg):
        print(f"summarize: {arg} is missing (that build or run did not happen)", file=sys.stderr)
        failed += 1
        continue
    with open(arg, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            t = json.loads(line)
            result = t.get("result", "")
            tap = [l for l in (t.get("stdout") or "").splitlines()
                   if re.match(r"(not )?ok\b", l)]
            if tap and result not in ("TIMEOUT",):
                for l in tap:
                    if l.startswith("not ok"):
                        failed += 1
                    elif re.search(r"#\s*SKIP", l, re.I):
                        skipped += 1
                    else:
                        passed += 1
                if result in ("FAIL", "ERROR") and not any(l.startswith("not ok") for l in tap):
                    failed += 1  # crashed or exited non-zero after its TAP lines
            elif result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif result == "SKIP":
                skipped += 1
            else:
                failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)

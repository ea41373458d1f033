#!/usr/bin/env python3
# The test files the documentation names exist: every `tests/...` path and every bare
# `test_NAME` / `test_NAME.c` in spec/*.md and README.md must be a file or folder of the tree,
# so that a renamed or merged test program cannot leave a stale pointer behind (it did once).
# Usage: test_doc_refs.py SOURCE_ROOT. Exit 0 when all exist, 1 listing each stale reference.
import pathlib
import re
import sys

# tests/NAME as written, with an optional extension; a build folder in front (build-fuzz/tests/
# fuzz/fuzz_x) names the program of that source. Upper-case parts are placeholders (seeds/NAME/).
PATH_RE = re.compile(r"(?<![\w.-])(?:build[\w-]*/)?(tests(?:/[\w.-]+)+)/?")
BARE_RE = re.compile(r"(?<![\w/.-])(test_[a-z0-9_]+)(\.(?:c|py|sh))?\b")
SOURCE_EXTS = (".c", ".py", ".sh")


def exists(root, rel):
    p = root / rel
    if p.exists():
        return True
    # a program named without its extension: tests/test_gpu, build-fuzz/tests/fuzz/fuzz_x
    return any(p.with_name(p.name + ext).exists() for ext in SOURCE_EXTS)


def bare_exists(root, name, ext):
    names = [name + ext] if ext else [name + e for e in SOURCE_EXTS]
    return any(any(root.glob("tests/**/" + n)) for n in names)


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    docs = sorted((root / "spec").glob("*.md")) + [root / "README.md"]
    stale = []
    for doc in docs:
        for lineno, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for m in PATH_RE.finditer(line):
                rel = m.group(1).rstrip(".")
                if any(c.isupper() for c in rel) or "*" in line[m.end():m.end() + 1]:
                    continue
                if not exists(root, rel):
                    stale.append(f"{doc.relative_to(root)}:{lineno}: {rel}")
            for m in BARE_RE.finditer(line):
                if not bare_exists(root, m.group(1), m.group(2)):
                    stale.append(f"{doc.relative_to(root)}:{lineno}: {m.group(0)}")
    for s in stale:
        print("stale test reference: " + s)
    print(f"{len(docs)} documents, {len(stale)} stale test references")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""gen_seeds.py: writes the seed inputs of fuzz_shardset and fuzz_encode_input (tests/fuzz/seeds/).

The layouts are those the targets decode (see the comment at the top of each target); the seeds
are small valid cases plus one of each fault the oracles know, so a short run starts at the code.
Run from the repository root: python3 tests/fuzz/gen_seeds.py"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def u16s(xs):
    return b"".join(struct.pack("<H", x) for x in xs)


def sfile(stem, num, mode, body):
    """One file of a fuzz_shardset input: name byte (stem index, number), mode, length, body."""
    return bytes([stem | num << 3, mode]) + struct.pack("<H", len(body)) + body


def shardset(flags, pat, max_tokens, files, ctl=b""):
    return bytes([flags, pat]) + struct.pack("<H", max_tokens) + b"".join(files) + ctl


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def shardset_seeds():
    docs = u16s([1, 5, 6, 7, 8, 1, 9, 10, 11, 1, 12, 13, 40, 41, 42, 43, 1, 20, 21])
    docs2 = u16s([1, 30, 31, 32, 33, 34, 1, 50, 51, 52, 53, 54, 55, 56, 57, 58])
    # stems: 0 val_, 1 val_bytes_, 2 train_, 3 .val_, 4 val_x_bytes_, 5 VAL_, 6 val_bytesy, 7 val
    w = lambda n, d: write("shardset", n, d)
    w("one_file_plain.bin", shardset(0, 0, 0, [sfile(0, 0, 1, docs)], b"\x00\x30"))
    w("two_files_sliding.bin",
      shardset(1, 0, 0, [sfile(0, 0, 1, docs), sfile(0, 1, 1, docs2)], b"\x21\x40"))
    w("sidecar_derived.bin",
      shardset(1 | 8 | 0x20, 0, 0, [sfile(0, 0, 1, docs), sfile(0, 1, 1, docs2)], b"\x00\x30"))
    w("sidecar_one_file.bin",
      shardset(1 | 8 | 0x20 | 0x40, 0, 0, [sfile(0, 0, 1, docs), sfile(0, 1, 1, docs2)],
               b"\x01\x30"))
    w("sidecar_derived_lora.bin",
      shardset(0 | 8 | 0x20, 0, 0, [sfile(0, 0, 1, docs + docs2)], b"\x07\x41"))
    w("sidecar_raw_bos_nonzero.bin",
      shardset(1 | 8, 0, 0, [sfile(0, 0, 1, docs), sfile(1, 0, 1, u16s([3] * 19))]))
    w("sidecar_count_mismatch.bin",
      shardset(1 | 8, 0, 0, [sfile(0, 0, 1, docs), sfile(1, 0, 1, u16s([0] * 7))]))
    w("mixed_names_star.bin",
      shardset(4, 3, 0, [sfile(0, 0, 1, docs), sfile(2, 0, 1, docs2), sfile(4, 2, 1, docs),
                         sfile(5, 1, 1, docs2), sfile(6, 5, 1, docs)]))
    w("hidden_dotstar.bin", shardset(1, 9, 0, [sfile(3, 0, 1, docs), sfile(0, 0, 1, docs2)]))
    w("wrong_count.bin", shardset(0, 0, 0, [sfile(0, 0, 5, docs)]))
    w("raw_header.bin", shardset(1, 4, 0, [sfile(0, 0, 0, b"\x00" * 40), sfile(0, 1, 1, docs)]))
    w("directory.bin", shardset(1, 1, 0, [sfile(0, 0, 0xff, b""), sfile(0, 1, 1, docs)]))
    w("max_tokens.bin", shardset(0x10 | 1, 2, 9, [sfile(0, 0, 1, docs), sfile(0, 3, 2, docs2)]))
    w("token_range.bin", shardset(0, 0, 0, [sfile(0, 0, 2, u16s([1, 2, 300, 4]))]))
    w("zeros.bin", shardset(0, 5, 0, [sfile(7, 5, 3, docs)], b"\x40\x70"))


if __name__ == "__main__":
    shardset_seeds()

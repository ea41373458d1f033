#!/usr/bin/env python3
"""gen_seeds.py: writes the seed inputs of fuzz_shardset, fuzz_encode_input, fuzz_legal and
fuzz_rendezvous, and the container v2 seeds of fuzz_container (tests/fuzz/seeds/).

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


def einput(jsonl, body):
    """One input of a fuzz_encode_input case: kind (bit 0: JSON lines), length, bytes."""
    return bytes([1 if jsonl else 0]) + struct.pack("<H", len(body)) + body


def encode_case(val_docs, ninputs, shard_byte, f2, inputs):
    return bytes([val_docs | (ninputs - 1) << 3, shard_byte, f2]) + b"".join(inputs)


def encode_seeds():
    w = lambda n, d: write("encode_input", n, d)
    j = lambda *lines: "".join(l + "\n" for l in lines).encode()
    docs = j('{"text": "In the beginning God created the heaven and the earth."}',
             '{"text": "And the earth was without form, and void; 123 456."}',
             '{"text": "Hello world, hello again."}')
    w("jsonl_three_docs.bin", encode_case(1, 1, 0, 1, [einput(1, docs)]))
    w("plain_and_jsonl.bin", encode_case(2, 2, 1, 3, [einput(0, "A plain text document.\n\n"
                                                                "With two paragraphs.".encode()),
                                                      einput(1, docs)]))
    w("escapes_crlf_blank.bin", encode_case(
        1, 1, 0, 0,
        [einput(1, b'{"text": "caf\\u00e9 \\ud83d\\ude00 tab\\there\\nnew line"}\r\n\r\n'
                   b'   \n{"id": 7, "text": "\xc3\xa9t\xc3\xa9 \xe2\x80\x94 \xef\xbc\xa1"}\r\n')]))
    w("bad_json_line.bin", encode_case(0, 1, 0, 1, [einput(1, docs + b'{"text": "unterminated\n')]))
    w("text_not_string.bin", encode_case(0, 1, 0, 1, [einput(1, docs + b'{"text": 42}\n')]))
    w("not_an_object.bin", encode_case(0, 1, 0, 1, [einput(1, b'["text", "x"]\n')]))
    w("duplicate_key.bin", encode_case(0, 1, 0, 1, [einput(1, b'{"text": "a", "text": "b"}\n')]))
    w("plain_bad_utf8.bin", encode_case(0, 2, 0, 0, [einput(1, docs),
                                                     einput(0, b"valid then \xff\xfe bad")]))
    w("empty_text.bin", encode_case(1, 1, 0, 1, [einput(1, docs + b'{"text": ""}\n')]))
    w("whitespace_text.bin", encode_case(1, 1, 0, 0, [einput(1, b'{"text": "   \\t "}\n' + docs)]))
    w("line_over_limit.bin", encode_case(0, 1, 0, 4 | 2 << 3,
                                         [einput(1, b'{"text": "short"}\n' + docs)]))
    w("three_inputs_small_shards.bin", encode_case(
        3, 3, 0, 2, [einput(1, docs), einput(0, "Plain \u00fcnicode \u4e2d\u6587 text.".encode()),
                     einput(1, docs)]))
    w("nul_escape.bin", encode_case(0, 1, 0, 1, [einput(1, b'{"text": "a\\u0000b"}\n')]))
    w("no_final_newline.bin", encode_case(0, 1, 0, 1, [einput(1, docs + b'{"text": "last"}')]))
    # a line nested 33 deep, one over the cap: refused before it is parsed (spec/errors.md)
    w("line_depth_over_cap.bin", encode_case(
        0, 1, 0, 1, [einput(1, docs + b'{"text": "a", "x": ' + b"[" * 32 + b"]" * 32 + b"}\n")]))


LEGAL_NAMES = ["causality", "normalisation", "score-before-update", "single-pass", "accounting",
               "provenance", "time", "reproduction"]


def legal_check(i, verdict, findings, summary="s"):
    return {"id": "L%d" % (i + 1), "name": LEGAL_NAMES[i], "verdict": verdict,
            "summary": summary, "spec": "spec/legal-record.md \u00a7%d" % (i + 1),
            "findings": findings}


def legal_seeds():
    """The record analyzer's output as pglegal reads it (spec/legal.md 6.2)."""
    import json
    ill = {"severity": "illegal", "title": "the n-gram key holds the target",
           "evidence": ["key = hash(x[t], x[t+1])", "line 812: cache[key] += 1"],
           "file": "train_gpt.py", "line": 812, "reachable": True}
    dead = {"severity": "info", "title": "pre-eval TTT behind TTT_PRE=0", "evidence": [],
            "file": "train_gpt.py", "line": 40, "reachable": False}
    warn = {"severity": "warning", "title": "estimate", "evidence": ["x"], "file": None,
            "line": None, "reachable": True}
    uni = {"severity": "illegal", "title": "calibration on val \u202e reversed",
           "evidence": ["caf\u00e9 \u2581x"], "file": "d\u00e9p\u00f4t/train_gpt.py",
           "line": 1, "reachable": True}
    verdicts = ["pass", "finding", "dead", "skip", "error", "pass", "pass", "pass"]
    docs = {
        "merge.json": {"checks": [legal_check(0, "finding", [ill]),
                                  legal_check(2, "dead", [dead])],
                       "facts": {"claimed_val_bpb": 1.081}},
        "all_eight.json": {"checks": [legal_check(i, verdicts[i], [warn] if i % 3 == 0 else [])
                                      for i in range(8)],
                           "facts": {"claimed_val_bpb": None, "bytes_total": 15990000,
                                     "seeds": [1337, 42, 2025]}},
        "empty.json": {"checks": []},
        "unicode.json": {"checks": [legal_check(5, "finding", [uni], summary="val \u00e9")],
                         "facts": {}},
    }
    for name, d in docs.items():
        write("legal", name, json.dumps(d, indent=1, ensure_ascii=False).encode())
    one = json.dumps(legal_check(0, "pass", []))
    write("legal", "duplicate_check.json", ('{"checks":[%s,%s]}' % (one, one)).encode())


def rendezvous(n, id_bytes, reserved=b"\0" * 4):
    """The NCCL rendezvous file of pg_comm.h: magic, the rank count (u32), reserved, the id."""
    return b"PGNCCLID" + struct.pack("<I", n) + reserved + id_bytes


def rendezvous_seeds():
    for n in (1, 2, 8):
        write("rendezvous", "ranks%d.bin" % n, rendezvous(n, bytes((i * n + 3) & 0xFF
                                                                  for i in range(128))))
    write("rendezvous", "reserved.bin", rendezvous(2, bytes(128), b"\0\1\0\0"))
    write("rendezvous", "short.bin", rendezvous(2, bytes(20)))


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def perm_stream(perms):
    """Codec 6, perm (spec/format.md section 13): the count and lengths, then every permutation's
    Lehmer digits (radix n-i, the last one not stored) through one range coder."""
    out = varint(len(perms)) + b"".join(varint(len(p)) for p in perms)
    if not perms:
        return out
    low, rng, body = 0, 0xFFFFFFFF, []
    for p in perms:
        free = sorted(p)
        for i, v in enumerate(p):
            d, m = free.index(v), len(p) - i
            free.pop(d)
            if m < 2:
                continue
            r = rng // m
            low += r * d
            rng = r if d + 1 < m else rng - r * d
            while rng < 1 << 24:
                rng <<= 8
                body.append(low >> 24)  # low's top byte may still take a carry: resolved below
                low = (low & 0xFFFFFF) << 8
    for _ in range(4):
        body.append(low >> 24)
        low = (low & 0xFFFFFF) << 8
    for i in range(len(body) - 1, 0, -1):  # carries: a byte of 256 or more passes one up
        body[i - 1] += body[i] >> 8
        body[i] &= 0xFF
    assert body[0] < 256
    return out + bytes(body)


def permcode_seeds():
    import random
    rnd = random.Random(5)
    cases = {"empty": [], "one": [[0]], "three_last": [[2, 1, 0]], "identity_40": [list(range(40))]}
    shuffled = list(range(300))
    rnd.shuffle(shuffled)
    cases["random_300"] = [shuffled]
    a, b = list(range(17)), list(range(5))
    rnd.shuffle(a)
    rnd.shuffle(b)
    cases["two_segments"] = [a, b]
    for name, perms in cases.items():
        raw_len = 2 * sum(len(p) for p in perms)
        write("permcode", name, struct.pack("<H", raw_len) + perm_stream(perms))


def container_v2(tensors, data_secs, qver=2, coded=None):
    """A container v2 file (spec/format.md): META (pgolf.writer), TENSORS, DATA sections, codec
    none except coded[i] = (codec, stored bytes) for DATA section i. tensors: (name, qtype,
    scale_kind, qmin, qmax, dims, layout byte, part sections)."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "tools"))
    from pgolf_artifact import xxh64_py as xxh64
    w = b"fuzz seed"
    meta = varint(1) + bytes([12]) + b"pgolf.writer" + bytes([3]) + varint(len(w)) + w
    d = varint(len(tensors))
    for name, qt, sk, lo, hi, dims, lay, secs in tensors:
        d += bytes([len(name)]) + name + bytes([qt, 0, sk, lo & 255, hi & 255, len(dims), 0, lay])
        d += b"".join(varint(x) for x in dims) + b"".join(varint(x) for x in secs)
    coded = coded or {}
    secs = [(1, meta, 0, meta), (2, d, 0, d)] + [(3, b) + coded.get(i, (0, b))
                                                 for i, b in enumerate(data_secs)]
    head = b"\x89PGZ\r\n\x1a\n" + struct.pack("<HH", 2, qver) + varint(len(secs))
    for kind, raw, codec, stored in secs:
        head += bytes([kind, codec, 0, 0, 0, 0]) + varint(len(stored)) + varint(len(raw))
        head += struct.pack("<I", xxh64(raw) & 0xFFFFFFFF)
    body = b"".join(stored for _, _, _, stored in secs)
    return head + struct.pack("<Q", xxh64(head + body)) + body


def container_seeds():
    """Quant layout 2 in container v2: a 4x6 int6 matrix with row scales stored transposed and
    row-permuted (perm in its own section), one row-major, one permuted only; an f32 vector."""
    rows, cols = 4, 6
    q = [[(r * 7 + c * 3) % 63 - 31 for c in range(cols)] for r in range(rows)]
    perm = [2, 0, 3, 1]
    img_t = bytes((q[perm[j]][c]) & 255 for c in range(cols) for j in range(rows))
    img_p = bytes((q[perm[j]][c]) & 255 for j in range(rows) for c in range(cols))
    img_r = bytes(q[r][c] & 255 for r in range(rows) for c in range(cols))
    scales = struct.pack("<4H", 0x3C00, 0x3800, 0x3400, 0x3000)
    pbytes = struct.pack("<4H", *perm)
    f32 = struct.pack("<3f", 1.0, -2.0, 0.5)
    m = lambda name, lay, secs: (name, 2, 1, -31, 31, [rows, cols], lay, secs)
    write("container", "seed_v2_layout.pgz", container_v2(
        [m(b"w.t", 0x11, [2, 2, 3]), m(b"w.r", 0x00, [2, 2]), m(b"w.p", 0x10, [2, 2, 3]),
         (b"v", 18, 0, 0, 0, [3], 0, [2])],
        [img_t + scales + img_r + scales + img_p + scales + f32, pbytes + pbytes]))
    write("container", "seed_v2_layout_perm_codec.pgz", container_v2(
        [m(b"w.t", 0x11, [2, 2, 3]), m(b"w.r", 0x00, [2, 2]), m(b"w.p", 0x10, [2, 2, 3]),
         (b"v", 18, 0, 0, 0, [3], 0, [2])],
        [img_t + scales + img_r + scales + img_p + scales + f32, pbytes + pbytes],
        coded={1: (6, perm_stream([list(perm), list(perm)]))}))
    write("container", "seed_v2_transposed.pgz", container_v2(
        [m(b"w", 0x01, [2, 2])], [img_r + scales]))
    write("container", "seed_v2_rowmajor_q1.pgz", container_v2(
        [m(b"w", 0x00, [2, 2])], [img_r + scales], qver=1))


if __name__ == "__main__":
    container_seeds()
    permcode_seeds()
    shardset_seeds()
    encode_seeds()
    legal_seeds()
    rendezvous_seeds()

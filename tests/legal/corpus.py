#!/usr/bin/env python3
"""The challenge's merged records through pglegal's record analyzer (spec/legal-record.md).

  corpus.py [--analyzer PATH] SNAPSHOT_GITDIR OUT
  corpus.py --check [--analyzer PATH]
      (meson: the snapshot from $PGOLF_CHALLENGE_REPO; 77 without)

Extracts every folder of records/track_10min_16mb/ of a snapshot of the challenge's repository
(a bare git directory) into OUT/records, makes illegal variants of legal records by small edits of
their code (OUT/variants: one per fault class), runs the analyzer on all of them and prints a
table: one row per folder, the verdict of L1..L7, the exit status. Nothing of the snapshot is
kept in pgolf's tree. With --check it fails (exit 1) when a variant is not caught by its check,
or a record gives a finding the table in spec/legal-record.md §12 does not list."""
import ast
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TRACK = "records/track_10min_16mb"
CHECKS = ["L%d" % i for i in range(1, 8)]

# Records whose findings are true ones, explained in spec/legal-record.md §12: folder prefix ->
# the checks that find. Any other finding on a merged record is a false one and fails --check.
KNOWN = {
    "2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence": {"L5"},
    "2026-04-09_A2_Muon097_3Seed": {"L5"},
    "2026-04-23_SP8192_CaseOps_SparseGate_QuantGate_Loop45_PhasedTTT_PolarNS_MinLR_FusedCE": {"L5"},
}


def git(gitdir, *args):
    return subprocess.run(["git", "--git-dir=" + gitdir, *args], capture_output=True,
                          check=True).stdout


def extract(gitdir, out):
    data = git(gitdir, "archive", "--format=tar", "HEAD", TRACK)
    dest = os.path.join(out, "records")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        # regular files and folders only, never outside dest (tarfile's "data" filter where
        # this Python has it, the same rule by hand where it does not)
        members = [m for m in tf.getmembers()
                   if (m.isfile() or m.isdir()) and not m.name.startswith("/")
                   and ".." not in m.name.split("/")]
        try:
            tf.extractall(dest, members=members, filter="data")
        except TypeError:
            tf.extractall(dest, members=members)
    root = os.path.join(dest, TRACK)
    return sorted(os.path.join(root, d) for d in os.listdir(root)
                  if os.path.isdir(os.path.join(root, d)))


def analyze(analyzer, folder):
    p = subprocess.run([sys.executable, analyzer, folder, "--json"], capture_output=True,
                       timeout=600)
    if p.returncode == 2:
        return 2, None, p.stderr.decode("utf-8", "replace").strip()
    return p.returncode, json.loads(p.stdout), ""


# ---------------------------------------------------------------- the mutations

def load_code(analyzer, folder):
    """The record's code, unwrapped by the analyzer's own unwrapper."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(analyzer)))
    import pglegal_record as P
    text = open(os.path.join(folder, "train_gpt.py"), encoding="utf-8").read()
    final, tree, layers, _, rewritten = P.unwrap(text, folder, "train_gpt.py")
    if rewritten:
        final = P.rewrite_fstrings(final)
    return ast.parse(final)


def funcs(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]


def stmt_lists(node):
    for n in ast.walk(node):
        for attr in ("body", "orelse", "finalbody"):
            v = getattr(n, attr, None)
            if isinstance(v, list) and v and isinstance(v[0], ast.stmt):
                yield v


def has(node, pred):
    return any(pred(n) for n in ast.walk(node))


def is_score(n):
    return (isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)
            and "loss_sum" in n.target.id)


def is_backward(n):
    return (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "backward")


def names_like(fn, rx):
    for n in ast.walk(fn):
        if isinstance(n, ast.Name) and re.fullmatch(rx, n.id):
            return n.id
    return None


def insert_before_score(fn, stmts):
    for lst in stmt_lists(fn):
        for i, st in enumerate(lst):
            if is_score(st):
                lst[i:i] = [s for s in ast.parse(stmts).body]
                return True
    return False


def m_target_in_key(tree):
    fn = funcs(tree, "eval_val_sliding")[0]
    tgt = names_like(fn, r"y_batch|y|targets?")
    fn.body.insert(0, ast.parse("ngram_cache = {}").body[0])
    return insert_before_score(fn, "hit = ngram_cache.get((int(%s.flatten()[0]), "
                                   "int(%s.flatten()[-1])), 0)" % (tgt, tgt))


def m_unnormalised_blend(tree):
    fn = funcs(tree, "eval_val_sliding")[0]
    fn.body.insert(0, ast.parse("ngram_counts = {}").body[0])
    return insert_before_score(fn, "p_ng = ngram_counts.get(0, 0.0)\n"
                                   "p_model = torch.softmax(logits.float(), dim=-1)\n"
                                   "p_mix = 0.9 * p_model + 0.1 * p_ng")


def m_slot(tree):
    fn = funcs(tree, "eval_val_sliding")[0]
    tgt = names_like(fn, r"y_batch|y")
    inp = names_like(fn, r"x_batch|x")
    model = [a.arg for a in fn.args.args if "model" in a.arg][0]
    return insert_before_score(fn, (
        "delta = torch.zeros(1, requires_grad=True)\n"
        "slot_opt = torch.optim.AdamW([delta], lr=0.01)\n"
        "slot_loss = F.cross_entropy({m}.forward_logits({x}).float().flatten(0, 1) + delta, "
        "{y}.flatten())\n"
        "slot_loss.backward()\n"
        "slot_opt.step()").format(m=model, x=inp, y=tgt))


def m_wrong_shift(tree):
    for fn in funcs(tree, "eval_val"):
        for lst in stmt_lists(fn):
            xs = [s for s in lst if isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)
                  and s.targets[0].id in ("x", "y") and "local[" in ast.unparse(s.value)]
            if len(xs) == 2:
                a, b = xs
                a.value, b.value = b.value, a.value
                return True
    return False


def m_update_before_score(tree):
    for fn in funcs(tree, "eval_val_sliding_ttt"):
        for lst in stmt_lists(fn):
            i_s = next((i for i, s in enumerate(lst) if has(s, is_score)), None)
            i_u = next((i for i, s in enumerate(lst) if has(s, is_backward)), None)
            if i_s is not None and i_u is not None and i_s < i_u and not has(lst[i_s], is_backward):
                lst.insert(i_s, lst.pop(i_u))
                return True
    return False


def m_two_pass(tree):
    for lst in stmt_lists(tree):
        for i, st in enumerate(lst):
            if isinstance(st, (ast.Assign, ast.Expr)) and has(
                    st, lambda n: isinstance(n, ast.Call)
                    and ast.unparse(n.func) == "eval_val_sliding_ttt"):
                lst.insert(i + 1, copy.deepcopy(st))
                return True
    return False


def m_best_of(tree):
    for lst in stmt_lists(tree):
        for i, st in enumerate(lst):
            if isinstance(st, ast.Assign) and isinstance(st.value, ast.Call) and \
                    ast.unparse(st.value.func) == "eval_val" and \
                    isinstance(st.targets[0], ast.Tuple) and "q_val" in ast.unparse(st.targets[0]):
                again = copy.deepcopy(st)
                again.targets[0] = ast.parse("q_val_loss2, q_val_bpb2").body[0].value
                lst[i + 1:i + 1] = ([again] +
                                    ast.parse("q_val_bpb = min(q_val_bpb, q_val_bpb2)").body)
                return True
    return False


def m_val_calibration(tree):
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and re.search(r"collect_hessians", ast.unparse(n.func)):
            for i, a in enumerate(n.args):
                if re.search(r"loader|train", ast.unparse(a)):
                    n.args[i] = ast.Name("val_tokens", ast.Load())
                    return True
    return False


def m_byte_table(tree):
    for fn in funcs(tree, "build_sentencepiece_luts"):
        for lst in stmt_lists(fn):
            for i, st in enumerate(lst):
                if isinstance(st, ast.If) and "is_byte" in ast.unparse(st.test):
                    del lst[i]
                    return True
    return False


def m_bos_smear(tree):
    done = False
    for n in ast.walk(tree):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult) and \
                isinstance(n.right, ast.Name) and n.right.id == "not_bos":
            n.right = ast.Constant(1.0)
            done = True
    return done


def m_uncounted(tree):
    for fn in funcs(tree, "main"):
        fn.body.insert(0, ast.parse("import eval_extra").body[0])
        return True
    return False


def m_dead(tree):
    tree.body.insert(len(tree.body) - 1, ast.parse(
        "def _unused_pre_eval_ttt(model, val_tokens, opt):\n"
        "    for s in range(0, val_tokens.numel() - 1025, 1024):\n"
        "        chunk = val_tokens[s:s + 1025]\n"
        "        loss = model(chunk[:-1].unsqueeze(0), chunk[1:].unsqueeze(0))\n"
        "        loss.backward()\n"
        "        opt.step()\n").body[0])
    return True


# name: (base record folder, mutation, the check that must find, extra files, claim edits)
VARIANTS = {
    "target_in_key": ("2026-03-19_SlidingWindowEval", m_target_in_key, "L1"),
    "wrong_shift": ("2026-03-17_NaiveBaseline", m_wrong_shift, "L1"),
    "unnormalised_blend": ("2026-03-19_SlidingWindowEval", m_unnormalised_blend, "L2"),
    "update_before_score": ("2026-03-23_LeakyReLU_LegalTTT_ParallelMuon", m_update_before_score,
                            "L3"),
    "slot": ("2026-03-19_SlidingWindowEval", m_slot, "L3"),
    "val_calibration": ("2026-03-29_Loader_FullGPTQ_XSA11_BigramHash2816", m_val_calibration, "L3"),
    "two_pass": ("2026-03-23_LeakyReLU_LegalTTT_ParallelMuon", m_two_pass, "L4"),
    "best_of_passes": ("2026-03-17_NaiveBaseline", m_best_of, "L4"),
    "uncounted_code": ("2026-03-17_NaiveBaseline", m_uncounted, "L5"),
    "claim_mismatch": ("2026-03-17_NaiveBaseline", None, "L5"),
    "byte_table": ("2026-03-17_NaiveBaseline", m_byte_table, "L5"),
    "bos_smear": ("2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611", m_bos_smear,
                  "L6"),
    "dead_code": ("2026-03-17_NaiveBaseline", m_dead, None),
}


def make_variant(analyzer, records, name, out):
    base, mut, check = VARIANTS[name]
    src = next((r for r in records if os.path.basename(r) == base), None)
    if src is None:
        return None, "base record %s not in the snapshot" % base
    dst = os.path.join(out, "variants", name)
    shutil.copytree(src, dst)
    if mut is not None:
        tree = load_code(analyzer, src)
        if not mut(tree):
            return None, "the mutation found nothing to change in %s" % base
        with open(os.path.join(dst, "train_gpt.py"), "w", encoding="utf-8") as f:
            f.write(ast.unparse(ast.fix_missing_locations(tree)) + "\n")
    if name == "uncounted_code":
        with open(os.path.join(dst, "eval_extra.py"), "w", encoding="utf-8") as f:
            f.write('"""Helper kept beside the script."""\nSCALE = 1.0\n' + "# padding\n" * 200)
    if name == "claim_mismatch":
        p = os.path.join(dst, "submission.json")
        sub = json.load(open(p))
        sub["val_bpb"] = round(sub["val_bpb"] - 0.01, 4)
        with open(p, "w") as f:
            json.dump(sub, f)
    if mut is not None or name in ("uncounted_code",):
        # the script changed: restate its size where the record states it, so that only the
        # intended fault remains (the logs and the claims keep the model's figures)
        code = len(open(os.path.join(dst, "train_gpt.py"), "rb").read())
        p = os.path.join(dst, "submission.json")
        if os.path.exists(p):
            sub = json.load(open(p))
            if "bytes_code" in sub:
                sub["bytes_code"] = code
            with open(p, "w") as f:
                json.dump(sub, f)
    return dst, check


def row(name, rc, res, err):
    if res is None:
        return [name] + ["error"] * 7 + [str(rc)], err
    v = {c["id"]: c["verdict"] for c in res["checks"]}
    return [name] + [v.get(c, "-") for c in CHECKS] + [str(rc)], ""


def table(rows):
    out = ["| record | " + " | ".join(CHECKS) + " | exit |", "|---|" + "---|" * (len(CHECKS) + 1)]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def totals(rows):
    t = {c: {} for c in CHECKS}
    for r in rows:
        for c, v in zip(CHECKS, r[1:8]):
            t[c][v] = t[c].get(v, 0) + 1
    return "totals: " + "; ".join(
        "%s %s" % (c, ", ".join("%s %d" % kv for kv in sorted(t[c].items()))) for c in CHECKS)


def main(argv):
    analyzer = os.path.join(HERE, "..", "..", "tools", "pglegal_record.py")
    check = False
    args = []
    it = iter(argv)
    for a in it:
        if a == "--analyzer":
            analyzer = next(it)
        elif a == "--check":
            check = True
        else:
            args.append(a)
    tmp = None
    if check and not args:
        snap = os.environ.get("PGOLF_CHALLENGE_REPO", "")
        if not snap or not os.path.isdir(snap):
            print("skip: PGOLF_CHALLENGE_REPO does not name a snapshot of the challenge repository")
            return 77
        tmp = tempfile.mkdtemp(prefix="pglegal-corpus-")
        args = [snap, tmp]
    if len(args) != 2:
        print("usage: corpus.py [--analyzer PATH] [--check] SNAPSHOT_GITDIR OUT", file=sys.stderr)
        return 2
    gitdir, out = args
    try:
        records = extract(gitdir, out)
        rows, bad = [], []
        for r in records:
            name = os.path.basename(r)
            rc, res, err = analyze(analyzer, r)
            cells, note = row(name, rc, res, err)
            rows.append(cells)
            found = {c["id"] for c in res["checks"] if c["verdict"] == "finding"} if res else set()
            extra = found - KNOWN.get(name, set())
            if extra:
                bad.append("%s: unexpected finding in %s" % (name, ", ".join(sorted(extra))))
            if note:
                print("note: %s: %s" % (name, note))
        print("## the merged records (%d folders)\n" % len(rows))
        print(table(rows))
        print("\n" + totals(rows))
        vrows = []
        for name in VARIANTS:
            dst, want = make_variant(analyzer, records, name, out)
            if dst is None:
                bad.append("variant %s: %s" % (name, want))
                continue
            rc, res, err = analyze(analyzer, dst)
            cells, note = row("variant " + name, rc, res, err)
            vrows.append(cells)
            v = {c["id"]: c["verdict"] for c in res["checks"]} if res else {}
            if want is not None and v.get(want) != "finding":
                bad.append("variant %s: %s is %s, not finding" % (name, want, v.get(want)))
            if want is None and (rc != 0 or "dead" not in v.values()):
                bad.append("variant %s: dead code flagged or not seen (exit %d)" % (name, rc))
        print("\n## illegal variants made from legal records (%d)\n" % len(vrows))
        print(table(vrows))
        for b in bad:
            print("FAIL " + b)
        return 1 if (bad and check) else 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

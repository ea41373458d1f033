#!/usr/bin/env python3
"""pglegal_record: the record-code half of pglegal (spec/legal-record.md).

Reads a challenge record folder (train_gpt.py, submission.json, logs, README), unwraps
self-extracting scripts without executing them, parses the code with Python's own parser and
reports the checks L1..L8 with evidence. Standard library only; nothing is executed and no input
is modified. Exit status: 0 clean, 1 findings, 2 could not check.
"""
import ast
import base64
import json
import lzma
import os
import re
import stat
import sys
import zlib

SPEC = "spec/legal-record.md"
BUDGET = 16_000_000
EVAL_LIMIT_S = 600.0
MAX_CODE = 16 << 20          # train_gpt.py and any file it reads as code
MAX_JSON = 1 << 20           # submission.json
MAX_TEXT = 64 << 20          # a log or README
MAX_DECODED = 64 << 20       # one decoded wrapper layer
MAX_LAYERS = 8               # wrapper nesting
MAX_FILES = 4096             # entries listed in a folder

NAMES = {"L1": "causality", "L2": "normalisation", "L3": "score-before-update",
         "L4": "single-pass", "L5": "accounting", "L6": "provenance", "L7": "time",
         "L8": "reproduction"}
SECTIONS = {"L1": 3, "L2": 4, "L3": 5, "L4": 6, "L5": 7, "L6": 8, "L7": 9, "L8": 10}


class Fault(Exception):
    """A fault that stops the check: one line naming the file and what is wrong."""


# ---------------------------------------------------------------- reading the folder

def read_bounded(path, limit, what):
    try:
        st = os.stat(path)
    except OSError as e:
        raise Fault("%s: %s" % (path, e.strerror or "cannot stat"))
    if not stat.S_ISREG(st.st_mode):
        raise Fault("%s: not a regular file" % path)
    if st.st_size > limit:
        raise Fault("%s: %d bytes, above the limit of %d for %s" % (path, st.st_size, limit, what))
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise Fault("%s: %s" % (path, e.strerror or "cannot read"))
    if len(data) > limit:
        raise Fault("%s: above the limit of %d bytes for %s" % (path, limit, what))
    return data


def decode_utf8(data, path):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Fault("%s: offset %d: not well-formed UTF-8" % (path, e.start))


def counted_code_bytes(data):
    """spec/record.md 1.2: len(read_text('utf-8').encode()) = raw size minus CRLF pairs."""
    return len(data) - data.count(b"\r\n")


def list_folder(folder):
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise Fault("%s: %s" % (folder, e.strerror or "cannot list"))
    if len(names) > MAX_FILES:
        raise Fault("%s: %d entries, above the limit of %d" % (folder, len(names), MAX_FILES))
    return names


def find_logs(folder, names):
    logs = []
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isdir(p) and n == "logs":
            for m in list_folder(p):
                q = os.path.join(p, m)
                if os.path.isfile(q) and (m.endswith((".log", ".txt"))):
                    logs.append(os.path.join(n, m))
        elif os.path.isfile(p) and (n.endswith(".log")
                                    or re.search(r"(^|_)(log|train)[^/]*\.txt$", n)):
            logs.append(n)
    return logs


# ---------------------------------------------------------------- f-strings of Python 3.12

_PFX = re.compile(r"([rRbBuUfF]{0,2})('''|\"\"\"|'|\")")


def _lit_start(s, i):
    m = _PFX.match(s, i)
    if not m or (m.group(1) and i > 0 and (s[i - 1].isalnum() or s[i - 1] == "_")):
        return None
    return m


def _scan_string(s, i, outer_q=None):
    m = _lit_start(s, i)
    pfx, q = m.group(1), m.group(2)
    j = m.end()
    isf = "f" in pfx.lower()
    body = []
    while True:
        if j >= len(s):
            raise SyntaxError("unterminated string")
        if s.startswith(q, j):
            j += len(q)
            break
        c = s[j]
        if c == "\\":
            body.append(s[j:j + 2])
            j += 2
            continue
        if len(q) == 1 and c == "\n":
            raise SyntaxError("newline in string")
        if isf and (s.startswith("{{", j) or s.startswith("}}", j)):
            body.append(s[j:j + 2])
            j += 2
            continue
        if isf and c == "{":
            txt, j = _scan_expr(s, j + 1, q[0])
            body.append("{" + txt + "}")
            continue
        body.append(c)
        j += 1
    text = "".join(body)
    if outer_q is not None and outer_q in q:
        alt = "'" if outer_q == '"' else '"'
        for nq in (alt, alt * 3):
            if nq not in text and not text.endswith(alt) and "\\" not in text:
                return pfx + nq + text + nq, j
        if not isf:
            return "_pg_str(%d)" % len(text), j
        raise SyntaxError("cannot re-quote a nested f-string")
    return pfx + q + text + q, j


def _scan_expr(s, j, q):
    depth = 0
    out = []
    while True:
        if j >= len(s):
            raise SyntaxError("unterminated f-string expression")
        c = s[j]
        if c == "}" and depth == 0:
            return "".join(out), j + 1
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if depth == 0 and c == ":":
            out.append(c)
            j += 1
            while True:
                if j >= len(s):
                    raise SyntaxError("unterminated format spec")
                if s[j] == "{":
                    t, j = _scan_expr(s, j + 1, q)
                    out.append("{" + t + "}")
                    continue
                if s[j] == "}":
                    return "".join(out), j + 1
                out.append(s[j])
                j += 1
        m = _lit_start(s, j)
        if m and (m.group(1) or c in "'\""):
            t, j = _scan_string(s, j, q)
            out.append(t)
            continue
        out.append(c)
        j += 1


def rewrite_fstrings(s):
    """Re-quote the string literals nested inside f-string expressions (PEP 701, Python 3.12)
    so that Python 3.11's parser reads the same program; line numbers are kept."""
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "#":
            k = s.find("\n", i)
            k = n if k < 0 else k
            out.append(s[i:k])
            i = k
            continue
        m = _lit_start(s, i)
        if m and (m.group(1) or c in "'\""):
            t, i = _scan_string(s, i)
            out.append(t)
            continue
        if c.isalnum() or c == "_":
            k = i
            while k < n and (s[k].isalnum() or s[k] == "_"):
                k += 1
            out.append(s[i:k])
            i = k
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_code(text, name):
    try:
        return ast.parse(text), False
    except SyntaxError as e:
        first = e
    except (ValueError, RecursionError, MemoryError) as e:
        raise Fault("%s: cannot parse: %s" % (name, str(e).splitlines()[0] if str(e)
                                              else type(e).__name__))
    try:
        return ast.parse(rewrite_fstrings(text)), True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise Fault("%s: line %s: Python syntax error: %s" % (name, first.lineno, first.msg))


# ---------------------------------------------------------------- unwrapping

class _Mod:
    def __init__(self, name):
        self.name = name


_DECODERS = {
    ("lzma", "decompress"), ("zlib", "decompress"), ("base64", "b85decode"),
    ("base64", "b64decode"), ("base64", "a85decode"), ("base64", "b32decode"),
    ("base64", "b16decode"), ("base64", "urlsafe_b64decode"), ("base64", "standard_b64decode"),
    ("gzip", "decompress"), ("bz2", "decompress"), ("codecs", "decode"),
}
_LZMA_CONSTS = {k: getattr(lzma, k) for k in dir(lzma) if k.isupper()}


def _limited_decompress(mod, data, kw):
    if mod == "lzma":
        fmt = kw.get("format", lzma.FORMAT_AUTO)
        filters = kw.get("filters")
        d = lzma.LZMADecompressor(format=fmt, filters=filters)
        out = d.decompress(data, max_length=MAX_DECODED + 1)
    elif mod == "zlib":
        d = zlib.decompressobj(kw.get("wbits", 15))
        out = d.decompress(data, MAX_DECODED + 1)
    elif mod == "gzip":
        d = zlib.decompressobj(31)
        out = d.decompress(data, MAX_DECODED + 1)
    else:
        import bz2
        d = bz2.BZ2Decompressor()
        out = d.decompress(data, max_length=MAX_DECODED + 1)
    if len(out) > MAX_DECODED:
        raise ValueError("decodes to more than %d bytes" % MAX_DECODED)
    return out


class Unwrapper:
    """Evaluates the few expressions a wrapper uses (literals, module aliases, the stdlib
    decoders, .decode(), open(sibling).read()); anything else is 'not a wrapper'."""

    def __init__(self, folder):
        self.folder = folder
        self.env = {}
        self.sibling_reads = []

    def ev(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id == "__file__":
                return os.path.join(self.folder, "train_gpt.py")
            raise ValueError("name %s" % node.id)
        if isinstance(node, ast.Attribute):
            base = self.ev(node.value)
            if isinstance(base, _Mod):
                if base.name == "lzma" and node.attr in _LZMA_CONSTS:
                    return _LZMA_CONSTS[node.attr]
                return (base.name, node.attr)
            if isinstance(base, (str, bytes)) and node.attr in ("decode", "encode", "replace"):
                return ("method", base, node.attr)
            if hasattr(base, "read") and node.attr == "read":
                return ("read", base)
            raise ValueError("attribute %s" % node.attr)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.ev(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {self.ev(k): self.ev(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.Call):
            f = self.ev(node.func)
            args = [self.ev(a) for a in node.args]
            kw = {k.arg: self.ev(k.value) for k in node.keywords}
            if isinstance(f, tuple) and len(f) == 2 and f in _DECODERS:
                mod, fn = f
                if fn == "decompress":
                    return _limited_decompress(mod, args[0], kw)
                if mod == "codecs":
                    raise ValueError("codecs.decode")
                data = args[0]
                if len(data) > 4 * MAX_DECODED:
                    raise ValueError("encoded text too long")
                return getattr(base64, fn)(data)
            if isinstance(f, tuple) and f[0] == "method":
                _, base, meth = f
                if meth == "decode":
                    return base.decode(*(args or ["utf-8"]))
                if meth == "encode":
                    return base.encode(*(args or ["utf-8"]))
                _replace_size(base, args)
                return base.replace(*args)
            if isinstance(f, tuple) and f[0] == "read":
                return f[1].read()
            if f == "open":
                path = args[0]
                if not isinstance(path, str):
                    raise ValueError("open of a computed name")
                real = os.path.realpath(path)
                if os.path.dirname(real) != os.path.realpath(self.folder):
                    raise ValueError("open outside the folder")
                data = read_bounded(real, MAX_CODE, "code")
                self.sibling_reads.append((os.path.basename(real), data))
                return _Opened(data)
            raise ValueError("call")
        if isinstance(node, ast.Name) and node.id == "open":
            return "open"
        raise ValueError(type(node).__name__)


class _TooLarge(ValueError):
    """A wrapper expression whose value would pass MAX_DECODED: a refusal, not 'no wrapper'."""


def _replace_size(base, args):
    """Refuses a str/bytes .replace() whose result would pass MAX_DECODED, before it is made:
    replacing "" inserts the new text at every position, so two 20,000-character literals
    asked for 400 million characters (2 GB, half a minute) and two of 100,000 for 10 GB."""
    if not 2 <= len(args) <= 3 or not all(type(a) is type(base) for a in args[:2]) \
            or (len(args) == 3 and type(args[2]) is not int):
        return  # str.replace itself refuses these, in its own words
    old, new = args[0], args[1]
    n = len(base) + 1 if not old else base.count(old)
    if len(args) == 3 and args[2] >= 0:
        n = min(n, args[2])
    if len(base) + n * (len(new) - len(old)) > MAX_DECODED:
        raise _TooLarge("replace() makes more than %d characters" % MAX_DECODED)


class _Opened:
    def __init__(self, data):
        self.data = data

    def read(self):
        return self.data.decode("utf-8")


def _imports_env(tree):
    env = {"open": "open"}
    for st in tree.body:
        if isinstance(st, ast.Import):
            for a in st.names:
                env[a.asname or a.name.split(".")[0]] = _Mod(a.name)
    return env


def _exec_payload(tree):
    """The argument of a top-level exec(...)/eval(...) call statement, or None."""
    for st in tree.body:
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
            f = st.value.func
            if isinstance(f, ast.Name) and f.id in ("exec", "eval") and st.value.args:
                return st
    return None


def unwrap(text, folder, fname):
    """Returns (final code text, tree, layers, sibling files read as code, rewritten flag)."""
    layers = []
    siblings = []
    cur, cur_name = text, fname
    for depth in range(MAX_LAYERS + 1):
        tree, rewritten = parse_code(cur, cur_name)
        st = _exec_payload(tree)
        body_other = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom,
                                                                 ast.Expr, ast.Assign))]
        if st is None or len(tree.body) > 12 or body_other:
            return cur, tree, layers, siblings, rewritten
        u = Unwrapper(folder)
        u.env = _imports_env(tree)
        for s in tree.body:   # simple constant assignments a wrapper may use
            if isinstance(s, ast.Assign) and len(s.targets) == 1 \
                    and isinstance(s.targets[0], ast.Name):
                try:
                    u.env[s.targets[0].id] = u.ev(s.value)
                except _TooLarge as e:
                    raise Fault("%s: line %d: the wrapper's value is too large: %s"
                                % (fname, s.lineno, e))
                except (ValueError, Fault, TypeError, KeyError):
                    pass
        try:
            payload = u.ev(st.value.args[0])
        except Fault:
            raise
        except (ValueError, TypeError, KeyError, IndexError, lzma.LZMAError, zlib.error,
                OSError, EOFError, AttributeError, MemoryError) as e:
            if layers or _decoders_used(st.value) - {"open", "read"} \
                    or isinstance(e, _TooLarge):
                raise Fault("%s: line %d: the wrapper's payload does not decode: %s"
                            % (fname, st.lineno, str(e).splitlines()[0] if str(e)
                               else type(e).__name__))
            return cur, tree, layers, siblings, rewritten
        siblings.extend(u.sibling_reads)
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError as e:
                raise Fault("%s: line %d: the wrapper decodes to bytes that are not "
                            "UTF-8 (offset %d)"
                            % (fname, st.lineno, e.start))
        if not isinstance(payload, str):
            raise Fault("%s: line %d: the wrapper's payload is not code" % (fname, st.lineno))
        kind = "sibling file" if u.sibling_reads else "decoded"
        layers.append({"line": st.lineno, "kind": kind, "chars": len(payload),
                       "decoders": sorted(_decoders_used(st.value))})
        if depth == MAX_LAYERS:
            raise Fault("%s: more than %d nested wrapper layers" % (fname, MAX_LAYERS))
        cur, cur_name = payload, "%s (layer %d)" % (fname, len(layers))
    raise Fault("%s: more than %d nested wrapper layers" % (fname, MAX_LAYERS))


def _decoders_used(node):
    names = {d[1] for d in _DECODERS} | {"open", "read"}
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and n.attr in names:
            out.add(n.attr)
        elif isinstance(n, ast.Name) and n.id == "open":
            out.add("open")
    return out


# ---------------------------------------------------------------- the configuration

UNKNOWN = object()
_HP_LINE = re.compile(r"^\s{1,8}([a-z_][a-z0-9_]*)\s*[:=]\s*(.*?)\s*$")
_ENV_TOKEN = re.compile(r"(?:^|\s)([A-Z][A-Z0-9_]{1,63})=(\"[^\"]*\"|'[^']*'|[^\s;&|]*)")


def parse_dump_value(text):
    t = text.strip()
    if t in ("True", "False"):
        return t == "True"
    if t == "None":
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def hp_dumps(log_texts):
    """The 'Hyperparameters:' blocks the logs print: attr -> value, UNKNOWN where logs differ."""
    merged = {}
    for text in log_texts:
        lines = text.splitlines()
        got = {}
        for i, line in enumerate(lines):
            if line.strip() in ("Hyperparameters:", "hyperparameters:"):
                for nxt in lines[i + 1:i + 400]:
                    m = _HP_LINE.match(nxt)
                    if not m:
                        break
                    got[m.group(1)] = parse_dump_value(m.group(2))
                break
        for k, v in got.items():
            if k in merged and merged[k] != v and k not in ("seed", "run_id", "logfile"):
                merged[k] = UNKNOWN
            elif k not in merged:
                merged[k] = v
    return merged


def env_overrides(texts):
    """VAR=value settings of run commands (lines naming torchrun/python, or export lines)."""
    env = {}
    for text in texts:
        for line in re.sub(r"\\\r?\n", " ", text).splitlines():
            s = line.strip()
            if not (("torchrun" in s or "python" in s or s.startswith("export ")) and "=" in s):
                continue
            for m in _ENV_TOKEN.finditer(s):
                k, v = m.group(1), m.group(2).strip("\"'")
                if k in env and env[k] != v:
                    env[k] = UNKNOWN
                elif k not in env:
                    env[k] = v
    return env


class Func:
    def __init__(self, node, cls, qual):
        self.node = node
        self.cls = cls
        self.qual = qual
        self.reachable = False
        self.tainted = set()
        self.tparams = set()


class Program:
    """The parsed script: functions, classes, the hyperparameters' values and which code the
    default configuration runs."""

    def __init__(self, tree, env, dump, local_modules):
        self.tree = tree
        self.env = env
        self.dump = dump
        self.local_modules = local_modules
        self.funcs = []
        self.by_name = {}
        self.classes = {}
        self.fn_of = {}          # id(stmt or expr) -> Func (innermost)
        self.hp = {}
        self.hp_source = {}
        self.consts = {}
        self.self_attrs = {}
        self.line_state = {}     # line -> 'dead' | 'undecided'
        self.undecided_tests = []
        self.local_imports = []  # (module, line, reachable)
        self.local_consts = None
        self._local_cache = {}
        self._collect(tree.body, None, "")
        self._config()
        self._reach()

    # -- collection
    def _collect(self, body, cls, prefix, parent=None):
        for st in body:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                f = Func(st, cls, prefix + st.name)
                self.funcs.append(f)
                self.by_name.setdefault(st.name, []).append(f)
                for n in ast.walk(st):
                    self.fn_of.setdefault(id(n), f)
                self._collect(st.body, None, prefix + st.name + ".", f)
                for n in ast.walk(st):
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n is not st:
                        pass
            elif isinstance(st, ast.ClassDef):
                self.classes.setdefault(st.name, st)
                self.by_name.setdefault(st.name, [])
                self._collect(st.body, st, prefix + st.name + ".", parent)
            else:
                for attr in ("body", "orelse", "finalbody", "handlers"):
                    sub = getattr(st, attr, None)
                    if isinstance(sub, list):
                        for h in sub:
                            if isinstance(h, ast.ExceptHandler):
                                self._collect(h.body, cls, prefix, parent)
                        self._collect([x for x in sub if isinstance(x, ast.stmt)], cls, prefix,
                                      parent)
        # fn_of maps each node to its innermost function: walk inner functions last
        if parent is None and prefix == "":
            self.fn_of = {}
            for f in sorted(self.funcs, key=lambda f: _depth(f.node, self.tree)):
                for n in ast.walk(f.node):
                    self.fn_of[id(n)] = f

    # -- constant evaluation
    def cev(self, node, cls=None):
        try:
            return self._cev(node, cls)
        except (ArithmeticError, TypeError, ValueError, KeyError, IndexError, AttributeError,
                RecursionError, OverflowError):
            return UNKNOWN

    def _cev(self, n, cls):
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            if n.id == "__name__":
                return "__main__"
            if self.local_consts and n.id in self.local_consts:
                return self.local_consts[n.id]
            if n.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[n.id]
            return self.consts.get(n.id, UNKNOWN)
        if isinstance(n, ast.Attribute):
            if isinstance(n.value, ast.Name):
                b = n.value.id
                if b == "self":
                    if cls is not None:
                        return self.self_attrs.get(cls.name, {}).get(n.attr, UNKNOWN)
                    return UNKNOWN
                if n.attr in self.hp and b not in ("os", "torch", "np", "math", "sys", "F", "nn"):
                    return self.hp[n.attr]
            if isinstance(n.value, ast.Attribute) and n.value.attr in ("h", "args", "hp") \
                    and n.attr in self.hp:
                return self.hp[n.attr]
            return UNKNOWN
        if isinstance(n, ast.Call):
            fn = _dotted(n.func)
            if fn in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                key = self._cev(n.args[0], cls) if n.args else UNKNOWN
                if not isinstance(key, str):
                    return UNKNOWN
                if key in self.env:
                    return self.env[key]
                if len(n.args) > 1:
                    return self._cev(n.args[1], cls)
                return None
            if fn in ("int", "float", "bool", "str") and len(n.args) == 1:
                v = self._cev(n.args[0], cls)
                if v is UNKNOWN:
                    return UNKNOWN
                return {"int": int, "float": float, "bool": bool, "str": str}[fn](v)
            if fn == "getattr" and len(n.args) >= 2 and isinstance(n.args[1], ast.Constant) \
                    and isinstance(n.args[1].value, str):
                attr = n.args[1].value
                base = n.args[0]
                if isinstance(base, ast.Name) and base.id != "self" and attr in self.hp:
                    return self.hp[attr]
                if isinstance(base, ast.Name) and base.id == "self" and cls is not None:
                    return self.self_attrs.get(cls.name, {}).get(attr, UNKNOWN)
                return UNKNOWN
            if fn in ("max", "min") and n.args:
                vals = [self._cev(a, cls) for a in n.args]
                if any(v is UNKNOWN for v in vals):
                    return UNKNOWN
                return max(vals) if fn == "max" else min(vals)
            if isinstance(n.func, ast.Attribute) and n.func.attr in ("lower", "strip") \
                    and not n.args:
                v = self._cev(n.func.value, cls)
                return UNKNOWN if not isinstance(v, str) else getattr(v, n.func.attr)()
            return UNKNOWN
        if isinstance(n, ast.Subscript) and _dotted(n.value) == "os.environ":
            key = self._cev(n.slice, cls)
            return self.env.get(key, UNKNOWN) if isinstance(key, str) else UNKNOWN
        if isinstance(n, ast.UnaryOp):
            v = self._cev(n.operand, cls)
            if v is UNKNOWN:
                return UNKNOWN
            if isinstance(n.op, ast.Not):
                return not v
            if isinstance(n.op, ast.USub):
                return -v
            if isinstance(n.op, ast.UAdd):
                return +v
            return UNKNOWN
        if isinstance(n, ast.BoolOp):
            vals = [self._cev(v, cls) for v in n.values]
            if isinstance(n.op, ast.And):
                for v in vals:
                    if v is not UNKNOWN and not v:
                        return v
                return UNKNOWN if any(v is UNKNOWN for v in vals) else vals[-1]
            for v in vals:
                if v is not UNKNOWN and v:
                    return v
            return UNKNOWN if any(v is UNKNOWN for v in vals) else vals[-1]
        if isinstance(n, ast.Compare):
            left = self._cev(n.left, cls)
            for op, right_n in zip(n.ops, n.comparators):
                if isinstance(op, (ast.In, ast.NotIn)) and _dotted(right_n) == "os.environ":
                    if left is UNKNOWN:
                        return UNKNOWN
                    r = left in self.env
                    r = r if isinstance(op, ast.In) else not r
                    if not r:
                        return False
                    continue
                right = self._cev(right_n, cls)
                if left is UNKNOWN or right is UNKNOWN:
                    return UNKNOWN
                ok = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
                      ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
                      ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
                      ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b,
                      ast.In: lambda a, b: a in b,
                      ast.NotIn: lambda a, b: a not in b}[type(op)](left, right)
                if not ok:
                    return False
                left = right
            return True
        if isinstance(n, ast.BinOp):
            a, b = self._cev(n.left, cls), self._cev(n.right, cls)
            if a is UNKNOWN or b is UNKNOWN:
                return UNKNOWN
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.Div: lambda: a / b, ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b}
            if type(n.op) in ops and not (isinstance(a, str) or isinstance(b, str)) \
                    or isinstance(n.op, ast.Add):
                return ops[type(n.op)]() if type(n.op) in ops else UNKNOWN
            return UNKNOWN
        if isinstance(n, ast.IfExp):
            t = self._cev(n.test, cls)
            if t is UNKNOWN:
                return UNKNOWN
            return self._cev(n.body if t else n.orelse, cls)
        if isinstance(n, (ast.Tuple, ast.List)):
            vals = [self._cev(e, cls) for e in n.elts]
            return UNKNOWN if any(v is UNKNOWN for v in vals) else tuple(vals)
        return UNKNOWN

    def _config(self):
        # module-level constants, then the hyperparameter classes, in source order
        for st in self.tree.body:
            if isinstance(st, ast.Assign) and len(st.targets) == 1 \
                    and isinstance(st.targets[0], ast.Name):
                self.consts[st.targets[0].id] = self.cev(st.value)
            elif isinstance(st, ast.ClassDef) and _is_hp_class(st):
                local = {}
                saved = self.consts
                self.consts = dict(saved)
                for b in st.body:
                    for tgt, val in _class_assigns(b):
                        v = self.cev(val)
                        if tgt in self.dump and self.dump[tgt] is not UNKNOWN:
                            v, src = self.dump[tgt], "log"
                        elif tgt in self.dump:
                            v, src = UNKNOWN, "logs disagree"
                        else:
                            src = "default" if not _env_keys(val) & set(self.env) else "run command"
                        local[tgt] = v
                        self.consts[tgt] = v
                        self.hp[tgt] = v
                        self.hp_source[tgt] = src
                self.consts = saved
        # self.X = <constant expression> in __init__ methods
        for name, cls in self.classes.items():
            attrs = {}
            for b in cls.body:
                if isinstance(b, ast.FunctionDef) and b.name == "__init__":
                    params = {a.arg for a in b.args.args}
                    for n in ast.walk(b):
                        if isinstance(n, ast.Assign) and len(n.targets) == 1:
                            t = n.targets[0]
                            if isinstance(t, ast.Attribute) and _dotted(t.value) == "self":
                                v = self.cev(n.value)
                                if t.attr in attrs and attrs[t.attr] != v:
                                    v = UNKNOWN
                                if _names(n.value) & params and not _hp_like(n.value, self.hp):
                                    v = UNKNOWN
                                attrs[t.attr] = v
            self.self_attrs[name] = attrs

    # -- reachability
    def _reach(self):
        self.reached_classes = set()
        work = []
        self._walk(self.tree.body, None, "live", work)
        while True:
            while work:
                f = work.pop()
                self._walk(f.node.body, f, "live", work)
            # decorated functions whose decorator names reachable code, and class methods
            more = False
            for f in self.funcs:
                if f.reachable:
                    continue
                for d in f.node.decorator_list:
                    base = d.func if isinstance(d, ast.Call) else d
                    root = _root_name(base)
                    if root and any(g.reachable for g in self.by_name.get(root, [])):
                        self._mark(f, work)
                        more = True
            if not work and not more:
                break
        for f in self.funcs:
            if not f.reachable:
                for ln in range(f.node.lineno, (f.node.end_lineno or f.node.lineno) + 1):
                    self.line_state[ln] = "dead"

    def _mark(self, f, work):
        if not f.reachable:
            f.reachable = True
            work.append(f)

    def _reach_name(self, name, work, attr=False):
        if name in self.classes and not attr:
            if name not in self.reached_classes:
                self.reached_classes.add(name)
                cls = self.classes[name]
                for b in cls.bases:
                    r = _root_name(b)
                    if r in self.classes:
                        self._reach_name(r, work)
                    elif isinstance(b, ast.Name) and b.id in self.classes:
                        self._reach_name(b.id, work)
                for f in self.funcs:
                    if f.cls is cls and (f.node.name.startswith("__") or f.node.name in
                                         ("forward", "backward", "step", "setup_context")):
                        self._mark(f, work)
        for f in self.by_name.get(name, []):
            if attr and f.cls is None:
                continue
            if not attr and f.cls is not None:
                continue
            if f.cls is not None and f.cls.name not in self.reached_classes and not attr:
                continue
            self._mark(f, work)

    def _locals_of(self, fn):
        """Names a function assigns exactly once, from an expression that folds to a constant
        (use_slot = getattr(args, "slot_enabled", False)); parameters are never constant."""
        count = {}
        vals = {}
        for n in _own_nodes(fn.node, self, fn):
            for t, v in _assign_pairs(n):
                for nm in _target_names(t):
                    count[nm] = count.get(nm, 0) + 1
                    if isinstance(t, ast.Name) and isinstance(n, ast.Assign):
                        vals[nm] = v
                    else:
                        vals[nm] = None
        params = {a.arg for a in fn.node.args.posonlyargs + fn.node.args.args
                  + fn.node.args.kwonlyargs}
        out = {}
        saved = self.local_consts
        self.local_consts = {}
        for nm, c in count.items():
            if c == 1 and vals.get(nm) is not None and nm not in params:
                v = self.cev(vals[nm], fn.cls)
                if v is not UNKNOWN and isinstance(v, (bool, int, float, str, type(None))):
                    out[nm] = v
        self.local_consts = saved
        return out

    def _walk(self, body, fn, state, work):
        cls = fn.cls if fn else None
        if fn is not None and body is fn.node.body:
            self.local_consts = self._locals_of(fn)
        elif fn is None:
            self.local_consts = None
        for st in body:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in st.decorator_list + st.args.defaults:
                    self._refs(d, work)
                continue
            if isinstance(st, ast.ClassDef):
                for b in st.bases:
                    self._refs(b, work)
                self._walk([b for b in st.body
                            if not isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))],
                           fn, state, work)
                continue
            if isinstance(st, ast.If):
                self._refs(st.test, work)
                if fn is not None:
                    self.local_consts = self._local_cache.setdefault(id(fn), self._locals_of(fn))
                v = self.cev(st.test, cls)
                if v is UNKNOWN:
                    if _mentions_config(st.test, self.hp):
                        self.undecided_tests.append(st.lineno)
                    self._walk(st.body, fn, "undecided", work)
                    self._walk(st.orelse, fn, "undecided", work)
                    self._set_state(st.body, "undecided", state)
                    self._set_state(st.orelse, "undecided", state)
                elif v:
                    self._walk(st.body, fn, state, work)
                    self._set_state(st.orelse, "dead", state)
                else:
                    self._set_state(st.body, "dead", state)
                    self._walk(st.orelse, fn, state, work)
                continue
            if isinstance(st, (ast.Import, ast.ImportFrom)):
                mod = st.module if isinstance(st, ast.ImportFrom) else None
                mods = [mod] if mod else [a.name for a in st.names]
                for m in mods:
                    if m and m.split(".")[0] in self.local_modules:
                        self.local_imports.append((m.split(".")[0], st.lineno))
                continue
            children = []
            for attr in ("body", "orelse", "finalbody"):
                sub = getattr(st, attr, None)
                if isinstance(sub, list):
                    children.extend(sub)
            for h in getattr(st, "handlers", []) or []:
                children.extend(h.body)
            for fld, val in ast.iter_fields(st):
                if fld in ("body", "orelse", "finalbody", "handlers"):
                    continue
                if isinstance(val, ast.AST):
                    self._refs(val, work)
                elif isinstance(val, list):
                    for v in val:
                        if isinstance(v, ast.AST):
                            self._refs(v, work)
            if children:
                self._walk(children, fn, state, work)

    def _set_state(self, stmts, new, outer):
        if not stmts:
            return
        rank = {"live": 0, "undecided": 1, "dead": 2}
        s = new if rank[new] >= rank[outer] else outer
        for st in stmts:
            for ln in range(st.lineno, (st.end_lineno or st.lineno) + 1):
                if rank[self.line_state.get(ln, "live")] < rank[s]:
                    self.line_state[ln] = s

    def _refs(self, node, work):
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in self.by_name:
                self._reach_name(n.id, work)
            elif isinstance(n, ast.Attribute) and n.attr in self.by_name:
                self._reach_name(n.attr, work, attr=True)
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) \
                    and n.value in self.by_name \
                    and n.value.isidentifier():
                self._reach_name(n.value, work, attr=True)   # getattr(obj, "name")

    def reach_of(self, node):
        """'live', 'undecided' or 'dead' for a node of the script."""
        f = self.fn_of.get(id(node))
        if f is not None and not f.reachable:
            return "dead"
        return self.line_state.get(getattr(node, "lineno", 0), "live")


def _depth(node, tree):
    return node.col_offset


def _dotted(n):
    parts = []
    while isinstance(n, ast.Attribute):
        parts.append(n.attr)
        n = n.value
    if isinstance(n, ast.Name):
        parts.append(n.id)
        return ".".join(reversed(parts))
    return ""


def _root_name(n):
    while isinstance(n, (ast.Attribute, ast.Call, ast.Subscript)):
        n = n.func if isinstance(n, ast.Call) else n.value
    return n.id if isinstance(n, ast.Name) else None


def _names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _env_keys(node):
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and _dotted(n.func) in ("os.environ.get", "os.getenv") \
                and n.args \
                and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str):
            out.add(n.args[0].value)
    return out


def _is_hp_class(cls):
    n = 0
    for b in cls.body:
        for _, val in _class_assigns(b):
            if _env_keys(val):
                n += 1
    return n >= 3


def _class_assigns(st):
    if isinstance(st, ast.Assign):
        for t in st.targets:
            if isinstance(t, ast.Name):
                yield t.id, st.value
    elif isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) and st.value is not None:
        yield st.target.id, st.value


def _hp_like(node, hp):
    return any(isinstance(n, ast.Attribute) and n.attr in hp for n in ast.walk(node))


def _mentions_config(node, hp):
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and (n.attr in hp or _dotted(n) == "os.environ"):
            return True
        if isinstance(n, ast.Call) and _env_keys(n):
            return True
    return False


# ---------------------------------------------------------------- data flow

VAL_DATA = re.compile(r"^(val|valid|validation|eval)_?"
                      r"(tokens?|data|ids|seq|stream|set|shards?|files?|bytes|docs?|x|y|loader"
                      r"|batch(es)?|chunks?|pattern|path)$", re.I)
VAL_CALL = re.compile(r"(load_?val|load_?validation|^ValidationData$|^ValData$|val_?loader$)", re.I)
SCORE_NAME = re.compile(r"(loss|nll|bits|logprob|lp_sum|ce_sum|neg_log)", re.I)
CACHE_NAME = re.compile(r"(cache|table|counts?$|^counts?|ngram|n_gram|memo|hist|freq|bucket)", re.I)
TARGET_NAME = re.compile(r"^(y|ys|yb|y_batch|targets?|target_ids|tgt|tgts|labels?|next_tok(en)?s?"
                         r"|gold)$", re.I)
INPUT_NAME = re.compile(r"^(x|xs|xb|x_batch|inputs?|input_ids|inp|ctx_ids|tokens_in)$", re.I)
CALIB_NAME = re.compile(r"(hessian|calib|gptq_collect|collect_stats|collect_act)", re.I)
MODEL_CALLEE = re.compile(r"(model|forward|logits|net|gpt|lm)$", re.I)
UPDATE_METHODS = {"update", "add_", "index_add_", "scatter_add_", "put_", "index_put_", "append",
                  "setdefault", "increment", "observe", "add"}


def _callee_name(call):
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return ""


def _assign_pairs(st):
    """(target node, value node) pairs of an assignment-like statement."""
    if isinstance(st, ast.Assign):
        for t in st.targets:
            yield t, st.value
    elif isinstance(st, (ast.AugAssign, ast.AnnAssign)) and st.value is not None:
        yield st.target, st.value
    elif isinstance(st, (ast.For, ast.AsyncFor)):
        yield st.target, st.iter
    elif isinstance(st, (ast.With, ast.AsyncWith)):
        for it in st.items:
            if it.optional_vars is not None:
                yield it.optional_vars, it.context_expr
    elif isinstance(st, ast.NamedExpr):
        yield st.target, st.value
    elif isinstance(st, ast.comprehension):
        yield st.target, st.iter


def _target_names(t):
    return {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}


class Analysis:
    """Validation taint, scores and updates over the whole program (flow-insensitive within a
    function, interprocedural through call sites)."""

    def __init__(self, prog):
        self.p = prog
        self.funcs = prog.funcs
        self._resolved = {}
        self.calls = []            # (call node, caller Func or None, [callee Func])
        for n in ast.walk(prog.tree):
            if isinstance(n, ast.Call):
                self.calls.append((n, prog.fn_of.get(id(n)), self._resolve(n)))
        self.ret_tainted = set()
        self.top_tainted = set()
        self._taint()
        self.scores = set()
        self._scores()

    @staticmethod
    def _key(call):
        """What a call's callees depend on: the called name, and whether it is a method."""
        f = call.func
        return ("n", f.id) if isinstance(f, ast.Name) else \
            ("a", f.attr) if isinstance(f, ast.Attribute) else None

    def _resolve(self, call):
        """The script's functions a call may reach, by name: a tuple cached per name, since a
        name defined k times gives k callees to every call of it (k calls of k definitions
        were k^2 steps at every use)."""
        key = self._key(call)
        if key in self._resolved:
            return self._resolved[key][0]
        out = []
        if key is not None and key[0] == "n":
            out = [g for g in self.p.by_name.get(key[1], []) if g.cls is None]
            if key[1] in self.p.classes:
                out += [g for g in self.p.funcs if g.cls is self.p.classes[key[1]]
                        and g.node.name == "__init__"]
        elif key is not None:
            out = [g for g in self.p.by_name.get(key[1], []) if g.cls is not None]
        self._resolved[key] = (tuple(out), frozenset(out),
                               frozenset(g for g in out if g.node.name != "__init__"))
        return self._resolved[key][0]

    def _reaches(self, call, funcs, init=True):
        """Whether the call may reach one of funcs (a set), in the size of the smaller."""
        self._resolve(call)
        return not funcs.isdisjoint(self._resolved[self._key(call)][1 if init else 2])

    # -- taint
    def tainted(self, node, fn):
        """Whether an expression can carry validation data. A call of a function of the script
        carries what that function returns; any other call (torch, methods of tensors, classes
        of the script) carries what its arguments carry."""
        names = fn.tainted if fn else self.top_tainted
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.Name) and (n.id in names or VAL_DATA.match(n.id)):
                return True
            if isinstance(n, ast.Attribute) and VAL_DATA.match(n.attr):
                return True
            if isinstance(n, (ast.Lambda, ast.FunctionDef)):
                continue
            if isinstance(n, ast.Call):
                cn = _callee_name(n)
                if VAL_CALL.search(cn):
                    return True
                self._resolve(n)
                if self._resolved[self._key(n)][2]:
                    if self._reaches(n, self.ret_tainted, init=False):
                        return True
                    if isinstance(n.func, ast.Attribute):
                        stack.append(n.func.value)
                    continue
            stack.extend(ast.iter_child_nodes(n))
        return False

    def _taint(self):
        changed = True
        rounds = 0
        pushed = {}  # call key -> argument positions and keyword names given to its callees
        while changed and rounds < 20:
            changed = False
            rounds += 1
            for fn in [None] + self.funcs:
                body = self.p.tree if fn is None else fn.node
                names = self.top_tainted if fn is None else fn.tainted
                for n in _own_nodes(body, self.p, fn):
                    for t, v in _assign_pairs(n):
                        if self.tainted(v, fn):
                            new = _target_names(t) - names
                            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                                    and t.value.id != "self":
                                new |= {t.value.id} - names
                            if new:
                                names |= new
                                changed = True
                    if isinstance(n, (ast.Return, ast.Yield)) and n.value is not None \
                            and fn is not None \
                            and fn not in self.ret_tainted and self.tainted(n.value, fn):
                        self.ret_tainted.add(fn)
                        changed = True
            for call, caller, callees in self.calls:
                # which arguments carry validation data, judged once per call, not per callee;
                # and each (name, argument) pushed to the name's callees once, ever (taint only
                # grows): k calls of a name defined k times were k^2 steps a round
                if not callees:
                    continue
                done = pushed.setdefault(self._key(call), set())
                new = [i for i, a in enumerate(call.args)
                       if i not in done and self.tainted(a, caller)]
                new += [k.arg for k in call.keywords
                        if k.arg and k.arg not in done and self.tainted(k.value, caller)]
                if not new:
                    continue
                done.update(new)
                for g in callees:
                    params = [a.arg for a in g.node.args.posonlyargs + g.node.args.args]
                    if g.cls is not None and params and params[0] in ("self", "cls") \
                            and isinstance(call.func, ast.Attribute):
                        params = params[1:]
                    for t in new:
                        name = t if isinstance(t, str) else \
                            params[t] if t < len(params) else None
                        if name is not None and name not in g.tainted:
                            g.tainted.add(name)
                            g.tparams.add(name)
                            changed = True

    # -- scores
    def is_score(self, n, fn):
        """A node that adds validation losses into a reported sum."""
        if self._is_score_alone(n, fn):
            return True
        if isinstance(n, ast.Call) and self._reaches(n, self.scores) \
                and any(self.tainted(a, fn) for a in list(n.args) + [k.value for k in n.keywords]):
            return True
        return False

    def _is_score_alone(self, n, fn):
        """is_score's tests that do not depend on which functions are scores."""
        if isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add):
            root = _root_name(n.target) or ""
            if SCORE_NAME.search(root) and self.tainted(n.value, fn):
                return True
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            root = _root_name(n.func.value) or ""
            if n.func.attr in ("add_", "append", "extend", "index_add_") \
                    and SCORE_NAME.search(root) \
                    and any(self.tainted(a, fn) for a in n.args):
                return True
        return False

    def _scores(self):
        """The functions is_score finds a node in, to a fixpoint. Rescanning every function until
        nothing changes took a round per link of a call chain (n rounds of n functions: 2,000
        two-line functions, 52 KB, took 41 s). Instead each function is read once: it is a score
        by itself (is_score's first two tests, which do not depend on self.scores), or through
        the functions it calls with validation data (the third); the scores are then those
        that reach a score by themselves along such calls, found backwards in one pass."""
        callers = {}
        work = []
        for fn in self.funcs:
            alone = False
            for n in _own_nodes(fn.node, self.p, fn):
                if not isinstance(n, (ast.AugAssign, ast.Call)):
                    continue
                if isinstance(n, ast.Call) and any(
                        self.tainted(a, fn) for a in list(n.args) + [k.value for k in n.keywords]):
                    callers.setdefault(self._key(n), []).append(fn)
                if not alone and self._is_score_alone(n, fn):
                    alone = True
            if alone:
                self.scores.add(fn)
                work.append(fn)
        keys_of = {}  # callee -> the call keys that reach it: each callee under at most 2 keys
        for key in callers:
            for g in self._resolved[key][0]:
                keys_of.setdefault(g, []).append(key)
        while work:
            for key in keys_of.pop(work.pop(), ()):
                for fn in callers.pop(key, ()):
                    if fn not in self.scores:
                        self.scores.add(fn)
                        work.append(fn)

    def score_nodes(self, fn):
        body = self.p.tree if fn is None else fn.node
        return [n for n in _own_nodes(body, self.p, fn) if self.is_score(n, fn)]


def _own_nodes(body, prog, fn):
    """Nodes of a function (or the module) not inside a nested function or class."""
    out = []
    stack = list(ast.iter_child_nodes(body))
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        out.append(n)
        stack.extend(ast.iter_child_nodes(n))
    out.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
    return out


def _parents(root):
    par = {}
    for n in ast.walk(root):
        for c in ast.iter_child_nodes(n):
            par[id(c)] = n
    return par


# ---------------------------------------------------------------- the checks

class Report:
    def __init__(self, code_name):
        self.code_name = code_name
        self.checks = {k: [] for k in NAMES}
        self.notes = {k: [] for k in NAMES}
        self.verdict_override = {}
        self.facts = {}

    def add(self, cid, severity, title, evidence, line=None, reach="live", file=None):
        if reach == "dead":
            reachable = False
        else:
            reachable = True
            if reach == "undecided" and severity == "illegal":
                severity = "warning"
                title = "(reachability undecided) " + title
        self.checks[cid].append({
            "severity": severity, "title": title, "evidence": list(evidence),
            "file": file if file is not None else (self.code_name if line is not None else None),
            "line": line, "reachable": reachable})

    def result(self):
        out = []
        for cid, name in NAMES.items():
            fs = self.checks[cid]
            live = [f for f in fs if f["reachable"] and f["severity"] in ("illegal", "warning")]
            if cid in self.verdict_override:
                verdict, summary = self.verdict_override[cid]
            elif live:
                ill = sum(1 for f in live if f["severity"] == "illegal")
                verdict = "finding"
                summary = "%d finding%s (%d illegal): %s" % (
                    len(live), "s" if len(live) > 1 else "", ill, live[0]["title"])
            elif any(not f["reachable"] for f in fs):
                verdict = "dead"
                summary = "only in code the configuration never runs: %s" % \
                    next(f for f in fs if not f["reachable"])["title"]
            else:
                verdict = "pass"
                summary = "; ".join(self.notes[cid]) or "no finding"
            out.append({"id": cid, "name": name, "verdict": verdict, "summary": summary,
                        "spec": "%s §%d" % (SPEC, SECTIONS[cid]), "findings": fs})
        return out


def _ev(prog, node, what=""):
    seg = "line %d" % node.lineno
    return "%s:%d: %s" % (prog.code_name, node.lineno, what or _src(prog, node))


def _src(prog, node):
    try:
        s = ast.unparse(node)
    except Exception:  # noqa: BLE001 - unparse of an odd tree: fall back to the node kind
        s = type(node).__name__
    s = " ".join(s.split())
    return s if len(s) <= 140 else s[:137] + "..."


def _enclosing_loops(node, par, stop):
    out = []
    n = par.get(id(node))
    while n is not None and n is not stop:
        if isinstance(n, (ast.For, ast.AsyncFor, ast.While)):
            out.append(n)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            break
        n = par.get(id(n))
    return out


def _contains(outer, node):
    return any(n is node for n in ast.walk(outer))


class Checker:
    def __init__(self, prog, ana, rep):
        self.p = prog
        self.a = ana
        self.r = rep
        self.par = _parents(prog.tree)
        self.trains = set()       # functions that update on validation data and never score it
                                  # after
        self.adapts = set()       # functions with a legal score-first update on validation data
        self.update_sites = []

    def reach(self, node):
        return self.p.reach_of(node)

    # L3 (and L6 for training on validation data): every update that reads validation data
    def updates(self, fn):
        body = self.p.tree if fn is None else fn.node
        out = []
        for n in _own_nodes(body, self.p, fn):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                    and n.func.attr == "backward" \
                    and self.a.tainted(n.func.value, fn):
                out.append((n, "gradient step on a loss of validation tokens"))
            elif isinstance(n, ast.Call) and _dotted(n.func) in ("torch.autograd.backward",
                                                                 "torch.autograd.grad") \
                    and n.args and self.a.tainted(n.args[0], fn):
                out.append((n, "gradient of a loss of validation tokens"))
            elif isinstance(n, (ast.Assign, ast.AugAssign)):
                tgts = n.targets if isinstance(n, ast.Assign) else [n.target]
                for t in tgts:
                    if isinstance(t, ast.Subscript) and CACHE_NAME.search(_root_name(t) or "") \
                            and (self.a.tainted(t.slice, fn) or self.a.tainted(n.value, fn)) \
                            and self._persistent(n, _root_name(t), fn):
                        out.append((n, "cache update from validation tokens"))
                        break
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                    and n.func.attr in UPDATE_METHODS \
                    and CACHE_NAME.search(_root_name(n.func.value) or "") \
                    and any(self.a.tainted(x, fn) for x in list(n.args)
                            + [k.value for k in n.keywords]) \
                    and self._persistent(n, _root_name(n.func.value), fn):
                out.append((n, "cache update from validation tokens"))
            elif isinstance(n, ast.Call) and self.a._reaches(n, self.trains) \
                    and any(self.a.tainted(x, fn) for x in list(n.args)
                            + [k.value for k in n.keywords]):
                g = next(g for g in self.a._resolve(n) if g in self.trains)
                out.append((n, "call of %s, which trains on the validation tokens it is given"
                            % g.qual))
        return out

    def exclusive(self, a, b):
        """a and b sit in the two branches of one if statement."""
        n = self.par.get(id(a))
        child = a
        while n is not None:
            if isinstance(n, ast.If):
                in_body = any(_contains(x, child) for x in n.body)
                other = n.orelse if in_body else n.body
                if any(_contains(x, b) for x in other):
                    return True
            child = n
            n = self.par.get(id(n))
        return False

    def _persistent(self, n, root, fn):
        """A cache write matters when it is made in a loop to a container that outlives one
        iteration: created outside that loop, or an attribute or global (a memo filled and
        read within one forward pass is not a statistic of the stream)."""
        stop = fn.node if fn else self.p.tree
        loops = _enclosing_loops(n, self.par, stop)
        if not loops:
            return False
        inner = loops[0]
        for m in ast.walk(inner):
            if isinstance(m, ast.Assign) and any(isinstance(t, ast.Name) and t.id == root
                                                 for t in m.targets):
                return False
        return True

    def order(self):
        """Classifies every update: score-first (legal), before a later score (L3), or a
        training function whose callers decide (repeated to a fixed point)."""
        changed = True
        rounds = 0
        while changed and rounds < 10:
            changed = False
            rounds += 1
            for fn in self.p.funcs:
                if fn in self.trains:
                    continue
                ups = self.updates(fn)
                if not ups:
                    continue
                scores = self.a.score_nodes(fn)
                for u, _ in ups:
                    if self._score_first(u, scores, fn):
                        continue
                    if not any(s.lineno > u.lineno for s in scores):
                        self.trains.add(fn)
                        changed = True
                        break
        self.sites = []
        for fn in [None] + self.p.funcs:
            if fn in self.trains:
                continue
            ups = self.updates(fn)
            scores = self.a.score_nodes(fn)
            for u, what in ups:
                if self._score_first(u, scores, fn):
                    if fn is not None:
                        self.adapts.add(fn)
                    continue
                later = [s for s in scores if s.lineno > u.lineno and not self.exclusive(u, s)]
                self.sites.append((fn, u, what, later))
        # the topmost training functions: no function outside the set calls them with
        # validation data, so nothing ever scores after them: validation data used to train
        self.orphan_trains = []
        for g in self.trains:
            outside = [c for c in self.a.calls if g in c[2] and c[1] not in self.trains and any(
                self.a.tainted(x, c[1]) for x in list(c[0].args)
                + [k.value for k in c[0].keywords])]
            if not outside:
                self.orphan_trains.append(g)

    def _score_first(self, u, scores, fn):
        stop = fn.node if fn else self.p.tree
        for loop in _enclosing_loops(u, self.par, stop):
            if any(s.lineno < u.lineno and _contains(loop, s) for s in scores):
                return True
        return False

    def check_l3(self):
        self.order()
        for fn, u, what, later in self.sites:
            gone = self._throwaway(u, fn)
            if gone:
                self.r.add("L3", "info",
                           "warm-up on validation tokens in %s trains state that is discarded "
                           "before any score (%s): nothing it learned reaches a prediction" % (
                               fn.qual if fn else "module code", ", ".join(sorted(gone))),
                           [_ev(self.p, u)], u.lineno, self.reach(u))
                continue
            fresh = self._fresh_param(u, fn)
            kind = "SLOT: per-window optimisation on the targets it then scores" if fresh else \
                "update before score"
            loops = _enclosing_loops(u, self.par, fn.node if fn else self.p.tree)
            same_iter = [s for s in later if loops and _contains(loops[0], s)]
            ev = [_ev(self.p, u, "%s: %s" % (what, _src(self.p, u)))]
            for s in (same_iter or later)[:2]:
                ev.append(_ev(self.p, s, "scored after it: " + _src(self.p, s)))
            if not later:
                ev.append("nothing in %s scores these targets after the update"
                          % (fn.qual if fn else "the module"))
            title = ("%s in %s: validation targets are read by an update before their scores are "
                     "final" % (kind, fn.qual if fn else "module code"))
            self.r.add("L3", "illegal", title, ev, u.lineno, self.reach(u))
        self.calibration()
        self.r.notes["L3"].append("%d score-first adaptive function%s" % (
            len([f for f in self.adapts if f.reachable]), "" if len(self.adapts) == 1 else "s"))

    def _throwaway(self, u, fn):
        """The optimizers stepped after u, and what they train, are created inside a loop
        around u that scores nothing, and are only deleted after it: the names, else None."""
        body = fn.node if fn else self.p.tree
        loops = _enclosing_loops(u, self.par, body)
        if not loops:
            return None
        own = _own_nodes(body, self.p, fn)
        scores = self.a.score_nodes(fn)
        steps = [c for c in ast.walk(loops[0])
                 if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                 and c.func.attr == "step" and isinstance(c.func.value, ast.Name)]
        if not steps:
            return None
        owners = set()
        for c in steps:
            opt = c.func.value.id
            owners.add(opt)
            for n in own:
                if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == opt
                                                     for t in n.targets) \
                        and isinstance(n.value, ast.Call) and n.value.args:
                    owners |= {x.id for x in ast.walk(n.value.args[0]) if isinstance(x, ast.Name)}
        for nm in owners:
            defs = [n for n in own if isinstance(n, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == nm for t in n.targets)]
            if not defs:
                return None
            lw = [lp for lp in loops if all(_contains(lp, d) for d in defs)]
            if not lw:
                return None
            lp = lw[-1]
            if any(_contains(lp, sc) for sc in scores):
                return None
            for n in own:
                if isinstance(n, ast.Name) and n.id == nm \
                        and n.lineno > (lp.end_lineno or lp.lineno) \
                        and not isinstance(n.ctx, ast.Del):
                    return None
        return owners

    def _fresh_param(self, u, fn):
        """A tensor with requires_grad (or a Parameter) created inside the loop that holds u."""
        loops = _enclosing_loops(u, self.par, fn.node if fn else self.p.tree)
        if not loops:
            return False
        for n in ast.walk(loops[0]):
            if isinstance(n, ast.keyword) and n.arg == "requires_grad" \
                    and self.p.cev(n.value) is True:
                return True
            if isinstance(n, ast.Call) and _callee_name(n) in ("Parameter", "requires_grad_"):
                return True
        return False

    def _origin_text(self, x, fn):
        """The text of an argument, of the assignment that made it, and of the __init__ of a
        script class that made it (a loader built over train_files)."""
        out = [_src(self.p, x)]
        if isinstance(x, ast.Name) and fn is not None:
            for a in _own_nodes(fn.node, self.p, fn):
                if isinstance(a, ast.Assign) and any(x.id in _target_names(t) for t in a.targets):
                    out.append(_src(self.p, a.value))
                    if isinstance(a.value, ast.Call) and _callee_name(a.value) in self.p.classes:
                        for g in self.a._resolve(a.value):
                            out.append(" ".join(n.attr for n in ast.walk(g.node)
                                                if isinstance(n, ast.Attribute)))
        return " ".join(out)

    def calibration(self):
        srcs = []
        for call, caller, callees in self.a.calls:
            name = _callee_name(call)
            if not CALIB_NAME.search(name) or name in self.p.classes:
                continue
            args = list(call.args) + [k.value for k in call.keywords]
            reach = self.reach(call)
            if any(self.a.tainted(x, caller) for x in args):
                src = "validation"
                self.r.add("L3", "illegal",
                           "calibration statistics (%s) computed on validation tokens before "
                           "they are scored" % name, [_ev(self.p, call)], call.lineno, reach)
                self.r.add("L6", "illegal", "calibration data comes from the validation set",
                           [_ev(self.p, call)], call.lineno, reach)
            elif re.search(r"generat|sample|synth|selfgen|autoregress", name, re.I) or any(
                    re.search(r"generat|synth|selfgen|autoregress", self._origin_text(x, caller),
                              re.I) for x in args):
                src = "self-generated"
            elif any(re.search(r"train", self._origin_text(x, caller), re.I) for x in args):
                src = "training data"
            else:
                src = "not decided"
            if reach != "dead" and callees:
                srcs.append("%s (line %d): %s" % (name, call.lineno, src))
        self.r.facts["calibration"] = srcs

    # L4
    def check_l4(self):
        results = {}    # name -> (call node) assigned from a scoring call
        for fn in [None] + self.p.funcs:
            body = self.p.tree if fn is None else fn.node
            own = _own_nodes(body, self.p, fn)
            res_names = {}
            adapt_calls = []
            score_calls = []
            for n in own:
                if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call):
                    if self.a._reaches(n.value, self.a.scores) and any(
                            self.a.tainted(x, fn) for x in n.value.args
                            + [k.value for k in n.value.keywords]):
                        for t in n.targets:
                            for nm in _target_names(t):
                                res_names.setdefault(nm, n)
                if isinstance(n, ast.Call) and any(self.a.tainted(x, fn) for x in n.args
                                                   + [k.value for k in n.keywords]):
                    if self.a._reaches(n, self.adapts):  # set sizes, not one step a callee
                        adapt_calls.append(n)
                    if self.a._reaches(n, self.a.scores) or self.a._reaches(n, self.adapts):
                        score_calls.append(n)
            for c1 in adapt_calls:
                m1 = _model_args(c1)
                for c2 in score_calls:
                    if c2.lineno > c1.lineno and m1 & _model_args(c2) \
                            and not self.exclusive(c1, c2):
                        self.r.add("L4", "illegal",
                                   "two-pass: the model adapted on the validation set by %s is "
                                   "scored on it again" % _callee_name(c1),
                                   [_ev(self.p, c1, "adapting pass: " + _src(self.p, c1)),
                                    _ev(self.p, c2, "second pass: " + _src(self.p, c2))],
                                   c2.lineno, _worst(self.reach(c1), self.reach(c2)))
                        break
            for n in own:
                if isinstance(n, ast.Call) and _callee_name(n) in ("min", "max", "minimum",
                                                                   "maximum", "sorted") \
                        and isinstance(n.func, (ast.Name, ast.Attribute)):
                    used = set()
                    for a in n.args:
                        used |= _names(a) & set(res_names)
                    loops = _enclosing_loops(n, self.par, body)
                    in_loop = any(_contains(lp, res_names[u]) for u in used for lp in loops)
                    if len(used) >= 2 or (used and in_loop):
                        self.r.add("L4", "illegal", "best of several scoring passes: %s over %s" % (
                            _callee_name(n), ", ".join(sorted(used))),
                            [_ev(self.p, n)]
                            + [_ev(self.p, res_names[u], "from: " + _src(self.p, res_names[u]))
                                                for u in sorted(used)][:3], n.lineno, self.reach(n))
                if isinstance(n, ast.If) and isinstance(n.test, ast.Compare) \
                        and len(n.test.ops) == 1 \
                        and isinstance(n.test.ops[0], (ast.Lt, ast.Gt, ast.LtE, ast.GtE)):
                    sides = _names(n.test.left) | _names(n.test.comparators[0])
                    if sides & set(res_names) and any(re.search(r"best|min|lowest", s, re.I)
                                                      for s in sides):
                        loops = _enclosing_loops(n, self.par, body)
                        if loops:
                            self.r.add("L4", "illegal",
                                       "best of several scoring passes kept by comparison",
                                       [_ev(self.p, n.test)], n.lineno, self.reach(n))
        self.r.notes["L4"].append("no re-scoring after adaptation, no min/best over passes")


def _worst(a, b):
    rank = {"live": 0, "undecided": 1, "dead": 2}
    return a if rank[a] >= rank[b] else b


def _model_args(call):
    out = set()
    for a in list(call.args) + [k.value for k in call.keywords]:
        if isinstance(a, ast.Name) and re.search(r"model|net|gpt", a.id, re.I):
            out.add(a.id)
    return out


def _slice_offset(sl):
    """(base expression dump, constant offset) of a slice's lower bound, or None."""
    if isinstance(sl, ast.Tuple) and sl.elts:
        sl = sl.elts[-1]
    if not isinstance(sl, ast.Slice):
        return None
    lo = sl.lower
    if lo is None:
        return ("", 0)
    if isinstance(lo, ast.Constant) and isinstance(lo.value, int):
        return ("", lo.value)
    if isinstance(lo, ast.BinOp) and isinstance(lo.right, ast.Constant) \
            and isinstance(lo.right.value, int):
        k = lo.right.value if isinstance(lo.op, ast.Add) else -lo.right.value \
                if isinstance(lo.op, ast.Sub) else None
        if k is not None:
            return (ast.dump(lo.left), k)
    return (ast.dump(lo), 0)


class Checker2(Checker):
    def target_names(self, fn):
        body = self.p.tree if fn is None else fn.node
        names = self.a.top_tainted if fn is None else fn.tainted
        tg = {n for n in names if TARGET_NAME.match(n)}
        own = _own_nodes(body, self.p, fn)
        for _ in range(4):
            for n in own:
                for t, v in _assign_pairs(n):
                    if isinstance(n, (ast.For, ast.comprehension)):
                        continue
                    if _names(v) & tg and not isinstance(v, ast.Call) or \
                            (isinstance(v, (ast.Tuple, ast.List)) and _names(v) & tg):
                        tg |= {x for x in _target_names(t) if not SCORE_NAME.search(x)}
                    elif isinstance(v, ast.Call) and _callee_name(v) in ("tuple", "hash", "str",
                                                                         "int", "repr") \
                            and _names(v) & tg:
                        tg |= _target_names(t)
        return tg, own

    def check_l1(self):
        for fn in [None] + self.p.funcs:
            tg, own = self.target_names(fn)
            if not tg:
                self._shift(fn, own)
                continue
            for n in own:
                key = None
                if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load) \
                        and isinstance(n.value, (ast.Name, ast.Attribute)) \
                        and CACHE_NAME.search(_root_name(n.value) or "") and _names(n.slice) & tg:
                    key = n.slice
                elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                        and n.func.attr in ("get", "lookup", "query") \
                        and CACHE_NAME.search(_root_name(n.func.value) or "") and n.args \
                        and _names(n.args[0]) & tg:
                    key = n.args[0]
                elif isinstance(n, ast.Call) and re.search(r"hash", _callee_name(n), re.I) \
                        and any(_names(a) & tg for a in n.args) \
                        and not isinstance(self.par.get(id(n)), ast.AugAssign):
                    key = n
                if key is not None:
                    self.r.add("L1", "illegal",
                               "target in the lookup key: a cache read in %s is keyed by the "
                               "token it predicts" % (fn.qual if fn else "module code"),
                               [_ev(self.p, n, "lookup: " + _src(self.p, n)),
                                "key names the target: %s" % ", ".join(sorted(_names(key) & tg))],
                               n.lineno, self.reach(n))
                if isinstance(n, ast.Call) and MODEL_CALLEE.search(_callee_name(n)) and n.args \
                        and _names(n.args[0]) & tg and not isinstance(n.args[0], ast.Constant):
                    self.r.add("L1", "illegal", "targets used as the model's input in %s"
                               % (fn.qual if fn else "module code"),
                               [_ev(self.p, n), "input names the target: %s"
                                % ", ".join(sorted(_names(n.args[0]) & tg))],
                               n.lineno, self.reach(n))
            self._shift(fn, own)
        self.r.notes["L1"].append("no target-keyed lookup, no target as input, labels "
                                  "shifted forward")

    def _shift(self, fn, own):
        ins, outs = {}, {}
        for n in own:
            if isinstance(n, ast.Assign) and len(n.targets) == 1 \
                    and isinstance(n.targets[0], ast.Name):
                v = n.value
                while isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute):
                    v = v.func.value      # x = buf[:-1].to(device)
                if not isinstance(v, ast.Subscript):
                    continue
                off = _slice_offset(v.slice)
                if off is None:
                    continue
                key = ast.dump(v.value)
                nm = n.targets[0].id
                if INPUT_NAME.match(nm):
                    ins[key] = (off, n)
                elif TARGET_NAME.match(nm):
                    outs[key] = (off, n)
        for key, ((b1, k1), n1) in ins.items():
            if key in outs:
                (b2, k2), n2 = outs[key]
                if b1 == b2 and k2 <= k1:
                    self.r.add("L1", "illegal",
                               "labels shifted the wrong way: the targets start at or before "
                               "the inputs (target offset %d, input offset %d)" % (k2, k1),
                               [_ev(self.p, n1), _ev(self.p, n2)], n2.lineno, self.reach(n2))

    # L2
    def check_l2(self):
        for fn in self.p.funcs:
            own = _own_nodes(fn.node, self.p, fn)
            origin = {}
            for n in own:
                if isinstance(n, ast.Assign):
                    for t in n.targets:
                        for nm in _target_names(t):
                            origin.setdefault(nm, []).append(n.value)
            cache_derived = set()
            normalised = set()
            for nm, vals in origin.items():
                for v in vals:
                    if _is_normalising(v):
                        normalised.add(nm)
                    for x in ast.walk(v):
                        if isinstance(x, (ast.Subscript, ast.Call)) \
                                and CACHE_NAME.search(_root_name(x) or ""):
                            cache_derived.add(nm)
            for _ in range(3):
                for nm, vals in origin.items():
                    if nm in normalised:
                        continue
                    if any(_names(v) & cache_derived and not _is_normalising(v) for v in vals) \
                            and all(not _is_normalising(v) for v in vals):
                        if nm not in cache_derived \
                                and any(isinstance(v, (ast.Name, ast.Subscript, ast.Attribute,
                                                       ast.IfExp)) for v in vals):
                            cache_derived.add(nm)
            if fn not in self.a.scores and not any(_callee_name(x) in ("log", "log2") for x in own
                                                   if isinstance(x, ast.Call)):
                continue
            for n in own:
                if not (isinstance(n, ast.Assign) and isinstance(n.value, ast.BinOp)
                        and isinstance(n.value.op, ast.Add)):
                    continue
                terms = _sum_terms(n.value)
                if len(terms) < 2 or not all(isinstance(t, ast.BinOp)
                                             and isinstance(t.op, ast.Mult) for t in terms):
                    continue
                bad = []
                for t in terms:
                    for nm in _names(t):
                        if nm in cache_derived and nm not in normalised:
                            bad.append(nm)
                tname = next(iter(_target_names(n.targets[0])), "")
                if bad and not any(_is_normalising(v) for v in origin.get(tname, [])[1:]):
                    self.r.add("L2", "illegal",
                               "a mixture of distributions in %s blends %s, which is not "
                               "normalised over the vocabulary"
                               % (fn.qual, ", ".join(sorted(set(bad)))),
                               [_ev(self.p, n)] + [_ev(self.p, origin[b][0], "%s = %s"
                                                       % (b, _src(self.p, origin[b][0])))
                                                   for b in sorted(set(bad))
                                                   if hasattr(origin[b][0], "lineno")][:2],
                               n.lineno, self.reach(n))
        self.r.notes["L2"].append("scored distributions are softmaxes or normalised mixtures")


def _sum_terms(e):
    if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
        return _sum_terms(e.left) + _sum_terms(e.right)
    return [e]


def _is_normalising(v):
    for x in ast.walk(v):
        if isinstance(x, ast.Call) and _callee_name(x) in ("softmax", "log_softmax", "logsumexp",
                                                           "normalize",
                                                           "normalise", "renorm", "renormalize"):
            return True
        if isinstance(x, ast.BinOp) and isinstance(x.op, ast.Div):
            r = x.right
            for y in ast.walk(r):
                if isinstance(y, ast.Call) and _callee_name(y) in ("sum", "logsumexp"):
                    return True
                if isinstance(y, ast.Name) and re.search(r"(total|sum|denom|norm|^z$|partition)",
                                                         y.id, re.I):
                    return True
                if isinstance(y, ast.Attribute) and re.search(r"(total|sum|denom|norm)", y.attr,
                                                              re.I):
                    return True
    return False


class Checker3(Checker2):
    # L6: the BOS smear
    def check_smear(self):
        isolated = []
        for n in ast.walk(self.p.tree):
            if isinstance(n, (ast.Name, ast.Attribute, ast.arg)):
                ident = n.id if isinstance(n, ast.Name) else n.attr \
                        if isinstance(n, ast.Attribute) \
                        else n.arg
                if re.search(r"(cu_seqlens|varlen|doc_mask|document_mask|block_mask)", ident,
                             re.I) \
                        and self.reach(n) != "dead":
                    isolated.append(n)
        found = False
        for fn in self.p.funcs:
            own = _own_nodes(fn.node, self.p, fn)
            if not any(isinstance(x, ast.Call) and _callee_name(x) == "sigmoid" for x in own):
                continue
            for n in own:
                if not (isinstance(n, ast.Call) and _callee_name(n) in ("cat", "pad") and n.args):
                    continue
                if not any(isinstance(s, ast.Subscript) and _prev_shift(s.slice)
                           for s in ast.walk(n)):
                    continue
                found = True
                masked = self._bos_masked(n, own)
                smear_attrs = {x.attr for x in ast.walk(fn.node)
                               if isinstance(x, ast.Attribute) and re.search(r"smear", x.attr,
                                                                             re.I)}
                trained = False
                for g in self.p.funcs:
                    if g.cls is fn.cls and fn.cls is not None:
                        continue
                    if any(isinstance(x, ast.Attribute) and x.attr in smear_attrs
                           for x in ast.walk(g.node)):
                        trained = True
                reach = self.reach(n)
                ev = [_ev(self.p, n, "previous-token mix: " + _src(self.p, n))]
                if masked:
                    self.r.notes["L6"].append("SmearGate with a BOS mask (line %d)" % n.lineno)
                    continue
                if not isolated:
                    self.r.add("L6", "info",
                               "SmearGate without a BOS mask, in a model that attends across "
                               "documents: the token mixed in is in the prefix, nothing "
                               "isolated is crossed",
                               ev, n.lineno, reach)
                    continue
                ev.append(_ev(self.p, isolated[0], "documents isolated here: "
                              + _ident(isolated[0])))
                if not trained:
                    self.r.add("L6", "info",
                               "SmearGate without a BOS mask in a document-masked model, but its "
                               "parameters (%s) are never given to an optimizer outside the "
                               "model: it stays at its initial value"
                               % ", ".join(sorted(smear_attrs)), ev, n.lineno, reach)
                    continue
                self.r.add("L6", "warning",
                           "BOS smear leak: the first token of each document takes in the last "
                           "token of the document packed before it, while attention is "
                           "document-masked (no BOS mask on the smear)", ev, n.lineno, reach)
        self.r.facts["smeargate"] = found

    def _bos_masked(self, mix, own):
        """Whether the mixed-in term depends on a BOS test: the names of the mixing call,
        followed back through the function's earlier assignments, reach a name or constant
        about BOS, or a comparison of the token ids with a constant."""
        seen = set()
        todo = [mix]
        while todo:
            e = todo.pop()
            for x in ast.walk(e):
                if re.search(r"bos", _ident(x) or "", re.I):
                    return True
                if isinstance(x, ast.Compare) and any(isinstance(c, ast.Constant)
                                                      for c in x.comparators) \
                        and re.search(r"ids|tokens", _src(self.p, x.left)):
                    return True
                if isinstance(x, ast.Name) and x.id not in seen:
                    seen.add(x.id)
                    for a in own:
                        if isinstance(a, ast.Assign) and a.lineno <= mix.lineno and \
                                any(x.id in _target_names(t) for t in a.targets):
                            todo.append(a.value)
        return False

    def check_l6(self):
        for g in self.orphan_trains:
            ups = self.updates(g)
            if ups:
                u = ups[0][0]
                self.r.add("L6", "illegal", "validation data read by a training code path (%s)"
                           % g.qual,
                           [_ev(self.p, u)], u.lineno, self.reach(u))
        self.check_smear()
        if not self.r.facts.get("calibration"):
            self.r.notes["L6"].append("no calibration pass")
        else:
            self.r.notes["L6"].append("calibration: " + "; ".join(self.r.facts["calibration"]))

    # L5: the byte table
    def check_bytes_table(self):
        for fn in self.p.funcs:
            own = _own_nodes(fn.node, self.p, fn)
            calls = {_callee_name(x) for x in own if isinstance(x, ast.Call)}
            if "id_to_piece" not in calls and "IdToPiece" not in calls:
                continue
            if not ({"len", "encode"} & calls):
                continue
            reach = self.reach(fn.node)
            probs = []
            if not ({"is_byte", "IsByte"} & calls):
                probs.append("byte-fallback pieces are not counted as 1 byte (no is_byte "
                             "test): a piece '<0xHH>' would count its 6 characters")
            if not ({"is_control", "IsControl"} & calls) \
                    or not ({"is_unknown", "IsUnknown"} & calls):
                probs.append("control/unknown pieces are not set to 0 bytes and boundary "
                             "(is_control / is_unknown missing)")
            strips = [x for x in own if isinstance(x, ast.Call)
                      and _callee_name(x) in ("lstrip", "replace", "strip")
                      and any(isinstance(a, ast.Constant) and a.value == "\u2581" for a in x.args)]
            starts = [x for x in own if isinstance(x, ast.Call) and _callee_name(x) == "startswith"
                      and any(isinstance(a, ast.Constant) and isinstance(a.value, str) and
                              a.value.startswith("\u2581") for a in x.args)]
            if strips:
                probs.append("the leading-space marker is removed with %s (not exactly one "
                             "leading '\u2581' counted by the has_leading_space table)"
                             % _callee_name(strips[0]))
            elif not starts:
                probs.append("the leading '\u2581' is not split off into has_leading_space: it "
                             "is counted as 3 bytes of the piece")
            self.r.facts.setdefault("byte_table", []).append("%s (line %d)"
                                                             % (fn.qual, fn.node.lineno))
            for pr in probs:
                self.r.add("L5", "illegal", "byte table miscounts: " + pr,
                           [_ev(self.p, fn.node, "byte table built by %s" % fn.qual)],
                           fn.node.lineno, reach)


def _ident(n):
    if isinstance(n, ast.Name):
        return n.id
    if isinstance(n, ast.Attribute):
        return n.attr
    if isinstance(n, ast.arg):
        return n.arg
    if isinstance(n, ast.Constant) and isinstance(n.value, str):
        return n.value
    return None


def _prev_shift(sl):
    """x[:, :-1]: the tokens shifted by one position (previous token at t)."""
    if isinstance(sl, ast.Tuple) and len(sl.elts) >= 2:
        s = sl.elts[1]
        return isinstance(s, ast.Slice) and s.lower is None and isinstance(s.upper, ast.UnaryOp) \
            and isinstance(s.upper.op, ast.USub) and isinstance(s.upper.operand, ast.Constant) \
            and s.upper.operand.value == 1
    return False


# ---------------------------------------------------------------- logs and claims

_FIG = re.compile(r"\bval_loss[:=]\s*([0-9]+\.[0-9]+)\s+val_bpb[:=]\s*([0-9]+\.[0-9]+)")
_EVAL_MS = re.compile(r"\beval_time[:=]\s*([0-9.]+)\s*ms")
_NUM_BYTES = re.compile(r"^(Code size|Total submission size|Serialized model)"
                        r"([^:]*):\s*([0-9]+)\s*bytes")
_SEED = re.compile(r"^\s*seed\s*[:=]\s*([0-9]+)\s*$")
_TOTAL_EVAL = re.compile(r"^total_eval_time[:=]\s*([0-9.]+)\s*s")
_TRAIN_STOP = re.compile(r"train_time[:=]\s*([0-9.]+)\s*ms")


def parse_log(name, text):
    info = {"file": name, "figures": [], "code": None, "code_compressed": False, "total": None,
            "model": None, "seed": None, "total_eval_s": None, "train_ms": None}
    m = re.search(r"seed[_-]?([0-9]+)", name)
    if m:
        info["seed"] = int(m.group(1))
    for i, line in enumerate(text.splitlines(), 1):
        if len(line) > 4096:
            continue
        f = _FIG.search(line)
        label = re.sub(r"^[0-9]+(\.[0-9]+)?\s+", "", line[:f.start()].strip()) if f else ""
        if f and re.fullmatch(r"[A-Za-z][\w+.\- ]*(\s+[a-z_]+:\S+)*", label) \
                and not label.startswith("step"):
            e = _EVAL_MS.search(line)
            info["figures"].append({"label": label.split()[0], "val_loss": float(f.group(1)),
                                    "val_bpb": float(f.group(2)),
                                    "eval_ms": float(e.group(1)) if e else None, "line": i})
            continue
        b = _NUM_BYTES.match(line)
        if b:
            kind, qual, v = b.group(1), b.group(2), int(b.group(3))
            if kind == "Code size" and "uncompressed" not in qual:
                info["code"] = v
                info["code_compressed"] = "compressed" in qual
            elif kind == "Total submission size" and (qual.strip() or info["total"] is None):
                info["total"] = v
            elif kind == "Serialized model" and qual.strip():
                info["model"] = v
            continue
        s = _SEED.match(line)
        if s:
            info["seed"] = int(s.group(1))
            continue
        t = _TOTAL_EVAL.match(line)
        if t:
            info["total_eval_s"] = float(t.group(1))
        if line.startswith("stopping_early"):
            t = _TRAIN_STOP.search(line)
            if t:
                info["train_ms"] = float(t.group(1))
    return info


def _decimals(x):
    s = repr(x)
    return len(s.split(".")[1]) if "." in s and "e" not in s else 6


def _agrees(claim, values):
    # within one unit of the claim's last digit: a figure rounded or truncated to those digits
    tol = 10 ** (-_decimals(claim)) + 1e-9
    return any(abs(claim - v) <= tol for v in values)


def claims_of(sub):
    c = {}
    for k in ("val_bpb", "val_loss", "bytes_total", "bytes_code", "mean_bpb"):
        v = sub.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            c[k] = v
    seeds = set()
    for k in ("seeds", "seed_results", "per_seed", "runs"):
        v = sub.get(k)
        if isinstance(v, list):
            for x in v:
                if isinstance(x, int) and not isinstance(x, bool):
                    seeds.add(x)
                elif isinstance(x, dict) and isinstance(x.get("seed"), int):
                    seeds.add(x["seed"])
        elif isinstance(v, dict):
            for x in v:
                if re.fullmatch(r"[0-9]{1,12}", str(x)):
                    seeds.add(int(x))
    if isinstance(sub.get("seed"), int):
        seeds.add(sub["seed"])
    c["seeds"] = sorted(seeds)
    return c


def _no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


def _bad_const(x):
    raise ValueError("%s is not JSON" % x)


def read_submission(folder, names):
    if "submission.json" not in names:
        return None, None
    path = os.path.join(folder, "submission.json")
    data = read_bounded(path, MAX_JSON, "submission.json")
    text = decode_utf8(data, path)
    try:
        sub = json.loads(text, object_pairs_hook=_no_dups, parse_constant=_bad_const)
    except json.JSONDecodeError as e:
        raise Fault("%s: offset %d: not JSON: %s" % (path, e.pos, e.msg))
    except (ValueError, RecursionError) as e:
        raise Fault("%s: %s" % (path, str(e).splitlines()[0] if str(e) else "not JSON"))
    if not isinstance(sub, dict):
        raise Fault("%s: the top level is not an object" % path)
    return sub, path


def check_accounting(rep, code_name, code_data, wrapper, extra_code, sub, logs):
    code = counted_code_bytes(code_data)
    rep.facts["code_file_bytes"] = len(code_data)
    rep.facts["code_bytes"] = code
    claims = claims_of(sub) if sub is not None else {}
    rep.facts["claims"] = claims
    totals = [l["total"] for l in logs if l["total"] is not None]
    models = [l["model"] for l in logs if l["model"] is not None]
    computed = any(l["code_compressed"] for l in logs)
    extra = sum(n for _, n, _ in extra_code)
    for name, n, how in extra_code:
        rep.add("L5", "illegal",
                "uncounted code: %s (%d bytes) is run by %s but is not in the counted file"
                % (name, n, code_name), [how], None, "live", file=name)
    if extra_code:
        base = max(totals) if totals else claims.get("bytes_total")
        if isinstance(base, (int, float)):
            tot = int(base) + extra
            rep.add("L5", "illegal" if tot > BUDGET else "warning",
                    "with the uncounted code the submission is %d bytes (%s the %d limit)"
                    % (tot, "over" if tot > BUDGET else "within", BUDGET),
                    ["%d (the record's count) + %d (uncounted code)" % (int(base), extra)], None,
                    "live")
    for l in logs:
        if l["code"] is not None and not l["code_compressed"] and l["code"] != code \
                and not extra_code:
            if l["code"] < code and l["model"] is not None and l["model"] + code > BUDGET:
                rep.add("L5", "illegal",
                        "the log counts %d code bytes, the shipped %s counts %d: the total "
                        "with the shipped code is %d, over the limit"
                        % (l["code"], code_name, code, l["model"] + code),
                        ["%s: Code size: %d bytes" % (l["file"], l["code"])], None, "live",
                        file=l["file"])
    over = [l for l in logs if l["total"] is not None and l["total"] > BUDGET]
    for l in over:
        rep.add("L5", "illegal", "%s reports a total of %d bytes, over the %d-byte limit"
                % (l["file"], l["total"], BUDGET),
                ["%s: Total submission size: %d bytes" % (l["file"], l["total"])], None, "live",
                file=l["file"])
    if computed:
        rep.notes["L5"].append("the logs count a computed compressed code wrapper (not shipped; "
                               "the shipped file counts %d bytes)" % code)
    # seeds the submission names whose logs the folder lacks: a claim may come from those runs, so
    # a claim that no log supports is then reported, not flagged
    log_seeds = {l["seed"] for l in logs if l["seed"] is not None}
    missing = [s for s in claims.get("seeds") or [] if s not in log_seeds] if log_seeds else []
    unlogged = " (the submission names seeds whose logs are not in the folder: %s)" % \
        ", ".join(map(str, missing)) if missing else ""
    if "bytes_total" in claims:
        bt = claims["bytes_total"]
        if bt > BUDGET:
            rep.add("L5", "illegal", "submission.json claims bytes_total %d, over the limit" % bt,
                    ["submission.json: bytes_total %s" % bt], None, "live", file="submission.json")
        elif totals and not (bt in totals or abs(bt - sum(totals) / len(totals)) <= 1):
            under = bt < min(totals)
            rep.add("L5", "warning" if under and not missing else "info",
                    "submission.json bytes_total %d matches no log's total (%s)%s%s" % (
                        bt, ", ".join(str(t) for t in sorted(set(totals))),
                        ": it is below every one of them" if under else "", unlogged),
                    ["submission.json: bytes_total %s" % bt] + ["%s: %d" % (l["file"], l["total"])
                                                                for l in logs
                                                               if l["total"] is not None][:3],
                    None, "live", file="submission.json")
    if "bytes_code" in claims and claims["bytes_code"] != code:
        bc = claims["bytes_code"]
        logged = [l["code"] for l in logs if l["code"] is not None]
        explained = computed or (0 <= bc < code and not wrapper) or bc in logged
        why = " (a computed compressed wrapper, spec/record.md §1.3)" \
            if computed or (0 <= bc < code and not wrapper) \
            else " (the code size a log printed: the shipped file is not the one that ran)" \
            if bc in logged else ""
        rep.add("L5", "info" if explained else "warning",
                "submission.json bytes_code %s, the shipped %s counts %d%s" % (bc, code_name, code,
                                                                               why),
                ["submission.json: bytes_code %s" % bc], None, "live", file="submission.json")
    figs = [f for l in logs for f in l["figures"]]
    for key in ("val_bpb", "val_loss"):
        if key not in claims or not figs:
            continue
        vals = [f[key] for f in figs]
        by_label = {}
        for l in logs:
            for f in l["figures"]:
                by_label.setdefault(f["label"], {})[l["file"]] = f[key]
        means = [sum(d.values()) / len(d) for d in by_label.values() if len(d) >= 2]
        if not _agrees(claims[key], vals + means):
            other = "val_bpb" if key == "val_loss" else "val_loss"
            ovals = [f[other] for f in figs if f.get(other) is not None]
            oby = {}
            for l in logs:
                for f in l["figures"]:
                    if f.get(other) is not None:
                        oby.setdefault(f["label"], {})[l["file"]] = f[other]
            ovals += [sum(d.values()) / len(d) for d in oby.values() if len(d) >= 2]
            if ovals and _agrees(claims[key], ovals):
                # a field holding the other figure (a record's val_loss that is its val_bpb): a
                # slip in the metadata, not a claim the logs fail to support
                rep.add("L5", "info", "submission.json %s %s is the logs' %s figure" % (
                    key, claims[key], other), ["submission.json: %s %s" % (key, claims[key])],
                    None, "live", file="submission.json")
                continue
            better = claims[key] < min(vals) - 10 ** (-_decimals(claims[key]))
            rep.add("L5", "warning" if better and not missing else "info",
                    "submission.json %s %s agrees with no figure of the logs%s%s" % (
                        key, claims[key], ": it is lower than every one of them" if better else "",
                        unlogged),
                    ["submission.json: %s %s" % (key, claims[key])] +
                    ["%s:%d: %s %s %s" % (l["file"], f["line"], f["label"], key, f[key])
                     for l in logs for f in l["figures"][-1:]][:3], None, "live",
                     file="submission.json")
    if claims.get("seeds") and log_seeds:
        if missing:
            rep.add("L5", "info", "submission.json names seeds with no log: %s"
                    % ", ".join(map(str, missing)),
                    ["logs hold seeds %s" % ", ".join(map(str, sorted(log_seeds)))], None, "live",
                    file="submission.json")
    rep.facts["log_seeds"] = sorted(log_seeds)
    rep.facts["log_totals"] = totals
    rep.facts["log_models"] = models
    rep.notes["L5"].insert(0, "code %d bytes%s"
                           % (code, (", logs' totals %d..%d" % (min(totals), max(totals)))
                                                   if totals else ""))


def check_time(rep, logs, claims):
    worst = None
    for l in logs:
        figs = [f for f in l["figures"] if f["eval_ms"] is not None]
        if not figs:
            continue
        rep_fig = None
        for key in ("val_bpb",):
            if key in claims:
                m = [f for f in figs if _agrees(claims[key], [f[key]])]
                rep_fig = m[-1] if m else None
        if rep_fig is None:
            rep_fig = figs[-1]
        s = rep_fig["eval_ms"] / 1000.0
        if l["total_eval_s"] is not None:
            s = max(s, l["total_eval_s"])
        if worst is None or s > worst[0]:
            worst = (s, l, rep_fig)
        if s > EVAL_LIMIT_S:
            rep.add("L7", "illegal", "%s: the reported evaluation (%s) took %.1f s, over %.0f s" % (
                l["file"], rep_fig["label"], s, EVAL_LIMIT_S),
                ["%s:%d: %s eval_time %.0f ms" % (l["file"], rep_fig["line"], rep_fig["label"],
                                                  rep_fig["eval_ms"])],
                None, "live", file=l["file"])
    if worst is None:
        rep.verdict_override["L7"] = ("skip", "no evaluation time in the logs")
        return
    rep.facts["eval_seconds_max"] = round(worst[0], 1)
    rep.facts["train_ms"] = [l["train_ms"] for l in logs if l["train_ms"] is not None]
    rep.notes["L7"].append("longest reported evaluation %.1f s (%s, %s) of %.0f s" % (
        worst[0], worst[2]["label"], worst[1]["file"], EVAL_LIMIT_S))


def detect_protocol(prog, ana):
    live = [f.node.name for f in prog.funcs if f.reachable and f in ana.scores]
    names = " ".join(live).lower()
    if "phased" in names:
        return "ttt-phased"
    if "lora" in names:
        return "ttt-lora"
    if "ttt" in names:
        return "ttt-chunk"
    if "sliding" in names:
        return "sliding"
    return "plain" if live else "unknown"


def analyse(folder, code_override=None):
    folder = folder.rstrip("/") or "/"
    if not os.path.exists(folder):
        raise Fault("%s: no such folder" % folder)
    if not os.path.isdir(folder):
        raise Fault("%s: not a folder" % folder)
    names = list_folder(folder)
    code_name = code_override or "train_gpt.py"
    notes = []
    if code_name not in names:
        alts = [n for n in names if re.fullmatch(r"train_gpt.*\.py", n)]
        if code_override is None and len(alts) == 1:
            notes.append("no train_gpt.py: analysed %s, the only train_gpt*.py" % alts[0])
            code_name = alts[0]
        else:
            raise Fault("%s: no %s" % (folder, code_name))
    code_path = os.path.join(folder, code_name)
    code_data = read_bounded(code_path, MAX_CODE, "code")
    text = decode_utf8(code_data, code_path)
    sub, _ = read_submission(folder, names)
    log_names = find_logs(folder, names)
    log_texts, logs = [], []
    for ln in log_names:
        p = os.path.join(folder, ln)
        d = read_bounded(p, MAX_TEXT, "a log")
        t = d.decode("utf-8", errors="replace")
        log_texts.append(t)
        logs.append(parse_log(ln, t))
    readme = ""
    if "README.md" in names:
        readme = read_bounded(os.path.join(folder, "README.md"), MAX_TEXT,
                              "README.md").decode("utf-8", "replace")
    final, tree, layers, siblings, rewritten = unwrap(text, folder, code_name)
    rep = Report(code_name if not layers else "%s (unwrapped)" % code_name)
    rep.facts["folder"] = os.path.basename(os.path.abspath(folder))
    rep.facts["code_file"] = code_name
    rep.facts["wrapper_layers"] = layers
    rep.facts["unwrapped_chars"] = len(final)
    rep.facts["parsed_with_fstring_rewrite"] = rewritten
    rep.facts["notes"] = notes
    local_mods = {n[:-3] for n in names if n.endswith(".py") and n != code_name}
    dump = hp_dumps(log_texts)
    env = env_overrides([readme] + log_texts)
    prog = Program(tree, env, dump, local_mods)
    prog.code_name = rep.code_name
    ana = Analysis(prog)
    chk = Checker3(prog, ana, rep)
    chk.check_l1()
    chk.check_l2()
    chk.check_l3()
    chk.check_l4()
    extra = []
    for name, data in siblings:
        extra.append((name, counted_code_bytes(data), "%s: exec of the text of %s (wrapper line %d)"
                      % (code_name, name, layers[0]["line"] if layers else 0)))
    seen = set()
    for mod, line in prog.local_imports:
        st = prog.reach_of(_FakeNode(line))
        if mod in seen or st == "dead":
            continue
        seen.add(mod)
        p = os.path.join(folder, mod + ".py")
        n = counted_code_bytes(read_bounded(p, MAX_CODE, "code"))
        extra.append((mod + ".py", n, "%s:%d: import of %s, a module of the folder"
                      % (rep.code_name, line, mod)))
    for mod, line in prog.local_imports:
        if prog.reach_of(_FakeNode(line)) == "dead" and mod not in seen:
            rep.add("L5", "info",
                    "import of %s.py (not counted) only in code the configuration never runs" % mod,
                    ["%s:%d" % (rep.code_name, line)], line, "dead")
    check_accounting(rep, code_name, code_data, bool(layers), extra, sub, logs)
    chk.check_bytes_table()
    chk.check_l6()
    check_time(rep, logs, rep.facts.get("claims", {}))
    rep.verdict_override["L8"] = (
        "skip", "no artifact in the folder: reproduction is pglegal's artifact side")
    if sub is None:
        rep.notes["L5"].append("no submission.json: no claims to compare")
    if not logs:
        rep.notes["L5"].append("no logs")
    rep.facts["protocol_detected"] = detect_protocol(prog, ana)
    rep.facts["logs"] = [{"file": l["file"], "seed": l["seed"], "total": l["total"],
                          "code": l["code"],
                          "final": l["figures"][-1] if l["figures"] else None} for l in logs]
    rep.facts["reachability"] = {
        "functions": len(prog.funcs), "reachable": sum(1 for f in prog.funcs if f.reachable),
        "config_from_logs": sorted(k for k, v in prog.hp_source.items() if v == "log")[:0] or
        len([k for k, v in prog.hp_source.items() if v == "log"]),
        "env_from_run_commands": sorted(k for k, v in env.items() if v is not UNKNOWN),
        "undecided_branches": sorted(set(prog.undecided_tests))[:50]}
    return rep


class _FakeNode:
    def __init__(self, line):
        self.lineno = line


# ---------------------------------------------------------------- output

def _line(s, limit=4000):
    """One line without NUL or control characters, at most limit bytes of UTF-8."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(s))
    b = s.encode("utf-8")
    if len(b) > limit:
        s = b[:limit - 3].decode("utf-8", "ignore") + "..."
    return s


def to_json(rep):
    checks = rep.result()
    for c in checks:
        c["summary"] = _line(c["summary"])
        c["findings"] = c["findings"][:4096]
        for f in c["findings"]:
            f["title"] = _line(f["title"])
            f["evidence"] = [_line(e) for e in f["evidence"][:256]]
            if f["file"] is not None:
                f["file"] = _line(f["file"], 1000)
            if f["line"] is not None and not 1 <= f["line"] <= 10 ** 8:
                f["line"] = None
    claims = rep.facts.get("claims", {})
    bpb = claims.get("val_bpb")
    rep.facts["claimed_val_bpb"] = bpb if isinstance(bpb, (int, float)) else None
    return {"checks": checks, "facts": rep.facts}


def exit_status(result):
    return 1 if any(c["verdict"] == "finding" for c in result["checks"]) else 0


def _clean(s):
    return "".join(ch if ch.isprintable() else "?" for ch in str(s))


def terminal(result, folder):
    out = ["pglegal record: %s" % _clean(folder)]
    for c in result["checks"]:
        out.append("%s %-20s %-8s %s" % (c["id"], c["name"], c["verdict"], _clean(c["summary"])))
        for f in c["findings"]:
            where = "%s:%s" % (f["file"], f["line"]) if f["line"] else (f["file"] or "")
            out.append("    [%s%s] %s%s" % (f["severity"], "" if f["reachable"] else ", dead",
                                           _clean(f["title"]),
                                           ("  (%s)" % _clean(where)) if where else ""))
            for e in f["evidence"][:4]:
                out.append("        %s" % _clean(e))
    fa = result["facts"]
    out.append("code %s bytes (file %s), wrapper layers %d, protocol %s" % (
        fa.get("code_bytes"), fa.get("code_file_bytes"), len(fa.get("wrapper_layers", [])),
        fa.get("protocol_detected")))
    return "\n".join(out)


def markdown(result, folder):
    out = ["### pglegal: `%s`" % _clean(os.path.basename(os.path.abspath(folder))), "",
           "| check | verdict | summary |", "|---|---|---|"]
    for c in result["checks"]:
        out.append("| %s %s | %s | %s |" % (c["id"], c["name"], c["verdict"],
                                            _clean(c["summary"]).replace("|", "\\|")))
    for c in result["checks"]:
        for f in c["findings"]:
            out.append("")
            out.append("- **%s %s** (%s%s): %s" % (c["id"], c["name"], f["severity"],
                                                    "" if f["reachable"] else ", dead code",
                                                    _clean(f["title"])))
            for e in f["evidence"][:4]:
                out.append("  - `%s`" % _clean(e).replace("`", "'"))
    return "\n".join(out)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="pglegal_record.py",
                                 description="legality checks of a record folder's code")
    ap.add_argument("folder")
    ap.add_argument("--json", action="store_true", help="one JSON object on standard output")
    ap.add_argument("--markdown", action="store_true", help="a Markdown report for a pull request")
    ap.add_argument("--code", help="the counted script's name (default train_gpt.py)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        rep = analyse(args.folder, args.code)
        result = to_json(rep)
    except Fault as e:
        print("pglegal_record: %s" % _clean(str(e).splitlines()[0] if str(e) else "error"),
              file=sys.stderr)
        return 2
    except (RecursionError, MemoryError) as e:
        print("pglegal_record: %s: too deeply nested or too large to analyse (%s)" % (
            _clean(args.folder), type(e).__name__), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1, default=lambda o: None))
    elif args.markdown:
        print(markdown(result, args.folder))
    else:
        print(terminal(result, args.folder))
    return exit_status(result)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

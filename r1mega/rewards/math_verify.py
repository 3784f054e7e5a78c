"""Is an extracted answer equivalent to the reference? Rule-based, exact first, sympy last.

Order of checks in :func:`is_equiv` (on the normalised strings of ``math_normalize``, which drop
noise, units and percent signs and turn inequalities into intervals and "or" into lists):

1. equal strings (case-insensitive for plain words such as names or "yes");
2. matrices (``pmatrix`` = ``bmatrix`` = ``vmatrix``...): same shape, entries compared by value;
3. choices: ``(C)``, ``C``, ``\\text{(C)}`` and ``\\textbf{(C) }12`` name choice C;
4. structures: sets ``\\{1,2\\}`` and bare lists "1, 2" (any order), tuples / intervals ``(1,2]``
   (same brackets, in order), unions ``A \\cup B`` (any order), ``a \\pm b`` = {a+b, a-b} and
   ``\\pm b`` = {b, -b}; elements are compared recursively;
5. equations with one "=" on both sides: sides compared pairwise (either orientation); an
   assignment to one variable (``x = 3``, ``(a, b) = (1, 4)``) against a plain answer is its value;
6. exact rationals: integers, decimals, a/b, ``\\frac{a}{b}``, mixed numbers, repeating decimals
   (``0.\\overline{6}`` = 2/3). A rounded decimal never equals an exact value (0.67 != 2/3);
7. symbolic: both sides converted from LaTeX to a whitelisted sympy string, parsed, and
   ``simplify(a - b) == 0``; forms without symbols (``\\log_3 27``, ``\\binom{8}{4}``) compare by
   value, to 1e-9 relative: 1.732 != sqrt(3).

sympy can hang (or simply take very long) on adversarial input, so the whole check runs under a
wall-clock limit (``timeout_s``, SIGALRM in the main thread of a process, which is where the reward
scorer's workers run it); a check past its limit counts as "not equivalent". The scorer's
per-sample process timeout remains the backstop for code that ignores signals.
"""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager

from r1mega.rewards.math_extract import read_braced
from r1mega.rewards.math_normalize import normalize, parse_number, strip_assignment


class CheckTimeout(BaseException):
    """Raised inside a check that ran past its time limit (BaseException: sympy's `except Exception`
    clauses must not swallow it)."""


@contextmanager
def time_limit(seconds: float):
    """Raise :class:`CheckTimeout` in this thread after ``seconds`` (no-op off the main thread, on
    platforms without SIGALRM, for seconds <= 0, or when an interval timer is already running)."""
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise CheckTimeout(f"check exceeded {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def is_equiv(pred: str | None, ref: str | None, timeout_s: float = 2.0) -> bool:
    """True when the answer ``pred`` means the same as the reference ``ref`` (see module docstring)."""
    if pred is None or ref is None:
        return False
    try:
        with time_limit(timeout_s):
            return _equiv(str(pred), str(ref), depth=0)
    except CheckTimeout:
        return False


# ---------------------------------------------------------------------------------------- structure

_OPEN, _CLOSE = "([{", ")]}"
_MATRIX = re.compile(r"\\begin\{([pbvBV]?matrix|array)\}(?:\{[lcr|]*\})?(.*?)\\end\{\1\}", re.DOTALL)
_CHOICE = re.compile(r"([A-E])|\(([A-E])\)(.*)")


def _split_top(s: str, sep: str) -> list[str]:
    """Split on ``sep`` where brackets of any kind are balanced (intervals like "[1,2)" included)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _wrapped(s: str) -> bool:
    """True when the bracket at s[0] closes at s[-1] (not earlier)."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return depth == 0


def _structure(s: str) -> tuple[str, str, list[str]] | None:
    """(kind, brackets, items) with kind "union" / "set" / "seq" / "pm", or None for a single item."""
    if len(_split_top(s, "\\cup")) > 1:
        return "union", "", _split_top(s, "\\cup")
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        return "set", "", [p for p in _split_top(inner, ",")] if inner else []
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _wrapped(s):
        items = _split_top(s[1:-1], ",")
        if len(items) > 1:
            return "seq", s[0] + s[-1], items
        return None
    items = _split_top(s, ",")
    if len(items) > 1:
        return "set", "", items
    items = _split_top(s, "\\pm")
    if len(items) == 2 and items[1]:
        if not items[0]:  # \pm b
            return "set", "", [items[1], f"-({items[1]})"]
        return "set", "", [f"{items[0]}+{items[1]}", f"{items[0]}-({items[1]})"]
    return None


def _match_unordered(a: list[str], b: list[str], depth: int) -> bool:
    if len(a) != len(b):
        return False
    left = list(b)
    for x in a:
        for j, y in enumerate(left):
            if _equiv(x, y, depth + 1):
                del left[j]
                break
        else:
            return False
    return True


# ------------------------------------------------------------------------------------------- main

def _matrix(s: str) -> tuple[tuple[int, int], list[str]] | None:
    """((rows, cols), entries row by row) of a ``\\begin{pmatrix}..\\end{pmatrix}`` (any matrix
    environment) that is the whole answer; None otherwise or when the rows differ in length."""
    m = _MATRIX.fullmatch(s.strip().strip("$").strip())
    if m is None:
        return None
    rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
    cells = [[c.strip() for c in r.split("&")] for r in rows]
    if not cells or len({len(r) for r in cells}) != 1:
        return None
    return (len(cells), len(cells[0])), [c for r in cells for c in r]


def _choice(s: str) -> tuple[str, str] | None:
    """(letter, value after it) of a normalised multiple-choice answer: "C", "(C)", "(C)12"."""
    m = _CHOICE.fullmatch(s)
    return (m.group(1) or m.group(2), m.group(3)) if m else None


def _equiv(pred: str, ref: str, depth: int) -> bool:
    if depth > 8:
        return False
    pm, rm = _matrix(pred), _matrix(ref)
    if pm is not None or rm is not None:
        return (pm is not None and rm is not None and pm[0] == rm[0]
                and all(_equiv(x, y, depth + 1) for x, y in zip(pm[1], rm[1])))
    p, r = normalize(pred), normalize(ref)
    if ("=" in p) != ("=" in r):  # "x = 5" against "5"
        p, r = strip_assignment(p), strip_assignment(r)
    if not p or not r:
        return False
    if p == r:
        return True
    words = re.compile(r"[A-Za-z][A-Za-z ]*")
    if words.fullmatch(p) and words.fullmatch(r) and (len(p) > 1 or len(r) > 1):
        return p.lower() == r.lower()
    pc, rc = _choice(p), _choice(r)
    if pc is not None and rc is not None:
        return pc[0] == rc[0]
    if (pc or rc) and (pc or rc)[1]:  # "(C) 12" against a value: the value
        return _equiv(pc[1], r, depth + 1) if pc else _equiv(p, rc[1], depth + 1)

    ps, rs = _structure(p), _structure(r)
    if ps is not None or rs is not None:
        if ps is None or rs is None or ps[0] != rs[0]:
            return False
        kind, brackets, items = ps
        if kind == "seq":
            return (brackets == rs[1] and len(items) == len(rs[2])
                    and all(_equiv(x, y, depth + 1) for x, y in zip(items, rs[2])))
        return _match_unordered(items, rs[2], depth)

    if p.count("=") == 1 and r.count("=") == 1:
        pl, pr = p.split("=")
        rl, rr = r.split("=")
        return ((_equiv(pl, rl, depth + 1) and _equiv(pr, rr, depth + 1))
                or (_equiv(pl, rr, depth + 1) and _equiv(pr, rl, depth + 1)))
    if "=" in p or "=" in r:
        return False

    pn, rn = parse_number(p), parse_number(r)
    if pn is not None and rn is not None:
        return pn == rn

    return _sympy_equal(p, r)


# ------------------------------------------------------------------------------------------ sympy

_FUNCS = {"sqrt", "log", "exp", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan",
          "sinh", "cosh", "tanh", "factorial", "binomial", "Abs", "pi", "oo"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "sigma", "phi", "omega", "rho",
          "tau", "psi", "xi", "eta", "zeta", "nu", "kappa", "chi"}
_CMD_MAP = {"cdot": "*", "times": "*", "div": "/", "pi": " pi ", "infty": " oo ", "ln": " log ", "log": " log ",
            "exp": " exp ", "sin": " sin ", "cos": " cos ", "tan": " tan ", "cot": " cot ", "sec": " sec ",
            "csc": " csc ", "arcsin": " asin ", "arccos": " acos ", "arctan": " atan ", "sinh": " sinh ",
            "cosh": " cosh ", "tanh": " tanh ", **{g: f" {g} " for g in _GREEK}}


def _arg(s: str, i: int) -> tuple[str, int] | None:
    """A LaTeX argument at s[i]: a braced group or one character (spaces skipped)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] == "{":
        return read_braced(s, i)
    if s[i] == "\\":
        m = re.match(r"\\[a-zA-Z]+", s[i:])
        return (m.group(0), i + m.end()) if m else None
    return s[i], i + 1


def latex_to_sympy_string(s: str) -> str | None:
    """Translate simple LaTeX math to a sympy expression string, or None if it uses anything else."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i) or s.startswith("\\binom", i):
            is_frac = s.startswith("\\frac", i)
            a = _arg(s, i + (5 if is_frac else 6))
            b = _arg(s, a[1]) if a else None
            if not b:
                return None
            x, y = latex_to_sympy_string(a[0]), latex_to_sympy_string(b[0])
            if x is None or y is None:
                return None
            out.append(f"(({x})/({y}))" if is_frac else f"binomial({x},{y})")
            i = b[1]
        elif re.match(r"\\log\s*_", s[i:]):  # \log_b x = log(x, b): x is a number, a group or a \frac
            base = _arg(s, s.index("_", i) + 1)
            j = base[1] if base else len(s)
            while j < len(s) and s[j] == " ":
                j += 1
            num = re.match(r"\d+(?:\.\d+)?", s[j:])
            if num:
                x, j = num.group(0), j + num.end()
            elif s.startswith("\\frac", j):
                a = _arg(s, j + 5)
                b = _arg(s, a[1]) if a else None
                if not b:
                    return None
                x, j = s[j:b[1]], b[1]
            else:
                got = _arg(s, j)
                if got is None:
                    return None
                x, j = got
            bx, xx = latex_to_sympy_string(base[0]), latex_to_sympy_string(x)
            if bx is None or xx is None:
                return None
            out.append(f" log({xx},{bx}) ")
            i = j
        elif s.startswith("\\sqrt", i):
            j, n = i + 5, None
            if j < len(s) and s[j] == "[":
                k = s.find("]", j)
                if k < 0:
                    return None
                n, j = latex_to_sympy_string(s[j + 1:k]), k + 1
            a = _arg(s, j)
            x = latex_to_sympy_string(a[0]) if a else None
            if x is None:
                return None
            out.append(f" sqrt({x}) " if n is None else f"(({x})**(1/({n})))")
            i = a[1]
        elif s[i] == "\\":
            m = re.match(r"\\([a-zA-Z]+)", s[i:])
            if not m or m.group(1) not in _CMD_MAP:
                return None
            out.append(_CMD_MAP[m.group(1)])
            i += m.end()
        elif s[i] in "{}":
            out.append("(" if s[i] == "{" else ")")
            i += 1
        elif s[i] == "^":
            out.append("**")
            i += 1
        else:
            out.append(s[i])
            i += 1
    text = "".join(out)
    if not re.fullmatch(r"[0-9a-zA-Z+\-*/().,!\s]*", text) or re.search(r"\.(?!\d)|(?<!\d)\.", text):
        return None
    words = []
    for tok in re.split(r"([A-Za-z]+)", text):
        if tok.isalpha() and tok not in _FUNCS and tok not in _GREEK:
            if len(tok) > 3:
                return None
            tok = "*".join(tok)  # "xy" -> x*y
        words.append(tok)
    text = re.sub(r"([A-Za-z])(?=\d)", r"\1 ", "".join(words))  # "x2" -> "x 2" (one Python name otherwise)
    if len(text) > 300 or text.count("**") > 4 or re.search(r"\*\*\s*\(*\s*-?\d{3,}|\d{4,}\s*!", text):
        return None  # huge powers / factorials: refuse rather than hang in C code
    return text


def _parse(s: str):
    import sympy
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    text = latex_to_sympy_string(s)
    if text is None or not text.strip():
        return None
    local = {c: sympy.Symbol(c) for c in "abcdfghjklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    local.update({"e": sympy.E, "i": sympy.I, "pi": sympy.pi, "oo": sympy.oo})
    local.update({g: sympy.Symbol(g) for g in _GREEK})
    try:
        return parse_expr(text, local_dict=local,
                          transformations=standard_transformations + (implicit_multiplication_application, convert_xor))
    except Exception:
        return None


def _sympy_equal(p: str, r: str) -> bool:
    a, b = _parse(p), _parse(r)
    if a is None or b is None:
        return False
    import sympy

    try:
        if a == b:
            return True
        d = sympy.simplify(a - b)
        if d == 0:
            return True
        if not d.free_symbols and d.is_finite:
            scale = max(1.0, abs(complex(b.evalf())))
            return abs(complex(d.evalf())) <= 1e-9 * scale
    except Exception:
        return False
    return False

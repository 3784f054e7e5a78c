"""String normalisation of math answers and exact parsing of plain numbers.

``normalize`` rewrites the surface forms that mean the same answer to one form:

* noise: ``$``, ``\\left``/``\\right``, spacing (``\\!``, ``\\,``, ``\\;``, ``\\quad``, ``\\textstyle``),
  ``\\dfrac``/``\\tfrac`` -> ``\\frac``, ``\\dbinom`` -> ``\\binom``, ``\\text{..}``/``\\mathrm{..}`` ->
  contents, degrees (``^\\circ``), trailing unit words ("5 cm", "\\$18", "8\\pi \\text{ square units}"):
  dropped, never converted;
* numbers: ``{,}``, ``\\,``, ``,\\!`` and commas between digit groups are thousands separators;
* percent, the MATH convention: ``\\%`` and "percent" are dropped, so 40\\% = 40 (and 0.4 != 40\\%);
* choices: "(A)" -> "A";
* inequalities in one variable become intervals: ``-2 \\le x < 5`` -> ``[-2,5)``, ``x > 3`` ->
  ``(3,\\infty)``, and "or" between them a union;
* "or" / "and" between answers becomes a list: ``x = 1 \\text{ or } x = 5`` -> ``x=1,x=5``.
"""

from __future__ import annotations

import re
from fractions import Fraction

from r1mega.rewards.math_extract import read_braced

# No single-letter units (m, g, s): "2m" is more often 2 times a variable m than 2 metres.
UNITS = (
    "square units", "square feet", "square inches", "square meters", "square centimeters", "sq units",
    "cubic units", "cubic feet", "cubic inches", "cubic meters", "cubic centimeters",
    "units", "unit", "degrees", "degree", "radians", "cm", "mm", "km", "meters", "meter", "metres",
    "inches", "inch", "feet", "foot", "ft", "yards", "yard", "miles", "mile", "mph", "kg", "grams",
    "pounds", "lbs", "lb", "ounces", "oz", "liters", "litres", "ml", "gallons", "dollars", "dollar", "cents",
    "cent", "hours", "hour", "hrs", "minutes", "minute", "mins", "seconds", "second", "sec",
    "days", "day", "weeks", "week", "months", "years", "year", "people", "students", "apples", "points",
    "percent", "times", "ways", "bags", "boxes", "books", "cookies", "eggs", "marbles", "pages", "pieces",
)
_UNIT_RE = re.compile(r"(?<=[\d}).])\s*(?:\\?\s*)(?:" + "|".join(sorted((re.escape(u) for u in UNITS), key=len, reverse=True))
                      + r")(?:\^\{?[23]\}?|\s*\^\\circ)?\s*$")
_TEXT_UNIT = re.compile(r"(?<=[\w}])\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z ]*\}(?:\^\{?[23]\}?)?\s*$")
_TEXT_CMDS = ("text", "textbf", "textit", "mathrm", "mathbf", "mbox", "operatorname", "mathit", "rm")
_SPACES = re.compile(r"\\[,;:! ]|\\q?quad|~|\\(?:display|text|script)style|\\limits|\\nonumber|\\mathrm(?=\{)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_NAME = r"(?:[a-zA-Z]|\\[a-zA-Z]+|[a-zA-Z]_\{?\w+\}?)"
_ASSIGN = re.compile(rf"^\s*(?:{_NAME}|\(\s*{_NAME}(?:\s*,\s*{_NAME})+\s*\))\s*=\s*(?=\S)")


def unwrap_command(s: str, names: tuple[str, ...]) -> str:
    """Replace ``\\name{X}`` by ``X`` for each command name (nested braces handled)."""
    pattern = re.compile(r"\\(?:" + "|".join(names) + r")\s*(?=\{)")
    while True:
        m = pattern.search(s)
        if not m:
            return s
        got = read_braced(s, m.end())
        if got is None:
            return s[:m.start()] + s[m.end():]
        s = s[:m.start()] + got[0] + s[got[1]:]


def normalize(s: str) -> str:
    """The normalised answer string (see the module docstring)."""
    s = s.strip()
    s = s.replace("\n", " ").replace("\u2212", "-").replace("\u00b0", "^\\circ")
    s = s.replace("\u2264", "\\leq ").replace("\u2265", "\\geq ")
    s = re.sub(r"\\boxed\s*(?=\{)", "", s) if s.startswith("\\boxed") else s
    if s.startswith("\\boxed{") or s.startswith("{"):
        got = read_braced(s, s.index("{"))
        if got and got[1] == len(s):
            s = got[0]
    s = s.replace("{,}", ",").replace(",\\!", ",")  # 1{,}000 and 1,\!000: thousands separators
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\bigl", "").replace("\\bigr", "")
    s = _SPACES.sub(" ", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\[dt]binom", r"\\binom", s)
    s = re.sub(r"\\leqslant|\\le(?![a-zA-Z])|<=", r"\\leq ", s)
    s = re.sub(r"\\geqslant|\\ge(?![a-zA-Z])|>=", r"\\geq ", s)
    s = re.sub(r"\\lt(?![a-zA-Z])", "<", re.sub(r"\\gt(?![a-zA-Z])", ">", s))
    s = s.replace("\\neq", "\\ne")
    s = _TEXT_UNIT.sub("", s)  # "5\\text{ m}": a word in \\text after a number at the end is a unit
    s = unwrap_command(s, _TEXT_CMDS)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ", "", s)
    s = s.replace("\\$", "").replace("\\\\%", "%").replace("\\%", "%").replace("%", "")
    s = s.strip().rstrip(".").strip()
    for _ in range(2):
        s = _UNIT_RE.sub("", s).strip()
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)
    s = _lists_and_inequalities(s)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    m = re.fullmatch(r"\(([A-Za-z])\)", s)  # multiple choice "(B)" -> "B"
    if m:
        s = m.group(1)
    if not re.search(r"(?<!\\)\b[A-Za-z]{2,}\s+[A-Za-z]{2,}", s):  # keep the spaces of plain words
        s = re.sub(r"(?<![A-Za-z])\s+|\s+(?![A-Za-z])", "", s)
    if s.startswith("."):
        s = "0" + s
    s = re.sub(r"^-\.", "-0.", s)
    return s


_JOINER = re.compile(r"\s*,?\s+(?:or|and)\s+")
_MATHY = re.compile(r"[\d=\\<>]|^\s*-?[a-zA-Z]\s*$")
_VAR = r"\s*(?:[a-zA-Z]|\\[a-zA-Z]+)\s*"
_INEQ_OPS = re.compile(r"(\\leq|\\geq|<|>)")


def inequality_to_interval(s: str) -> str | None:
    """``a < x <= b`` / ``x > a`` / ``a >= x`` (one variable) as an interval, else None."""
    parts = _INEQ_OPS.split(s)
    if len(parts) not in (3, 5) or not all(p.strip() for p in parts[::2]):
        return None
    less = {"<": (True, False), "\\leq": (True, True), ">": (False, False), "\\geq": (False, True)}
    ops = [less[o] for o in parts[1::2]]
    if len(parts) == 5:  # a OP x OP b, both the same direction
        lo, var, hi = (p.strip() for p in parts[::2])
        if not re.fullmatch(_VAR, var) or ops[0][0] != ops[1][0]:
            return None
        (_, lo_closed), (_, hi_closed) = ops
        if not ops[0][0]:  # a > x > b
            lo, hi, lo_closed, hi_closed = hi, lo, hi_closed, lo_closed
        return f"{'[' if lo_closed else '('}{lo},{hi}{']' if hi_closed else ')'}"
    left, right = parts[0].strip(), parts[2].strip()
    is_less, closed = ops[0]
    if re.fullmatch(_VAR, left) and not re.fullmatch(_VAR, right):
        bound = right
    elif re.fullmatch(_VAR, right) and not re.fullmatch(_VAR, left):
        bound, is_less = left, not is_less  # a < x  is  x > a
    else:
        return None
    if is_less:
        return f"(-\\infty,{bound}{']' if closed else ')'}"
    return f"{'[' if closed else '('}{bound},\\infty)"


def _lists_and_inequalities(s: str) -> str:
    """Inequalities to intervals (joined by "or": a union); other answers joined by "or"/"and": a list."""
    pieces = _JOINER.split(s)
    if len(pieces) > 1 and not all(_MATHY.search(p) for p in pieces):
        return s  # words: "Alice and Bob"
    intervals = [inequality_to_interval(p) for p in pieces]
    if all(intervals):
        return "\\cup".join(intervals)
    return ",".join(pieces) if len(pieces) > 1 else s


def strip_assignment(s: str) -> str:
    """"x=5" -> "5", "(a,b)=(1,4)" -> "(1,4)" (variables on the left of the only "="); others unchanged."""
    return _ASSIGN.sub("", s, count=1) if s.count("=") == 1 else s

_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?)\\frac(\d)(\d)$")
_MIXED = re.compile(r"^(-?)(\d+)\\frac(?:\{(\d+)\}\{(\d+)\}|(\d)(\d))$")
_REPEATING = re.compile(r"^(-?)(\d*)\.(\d*)\\overline\{?(\d+)\}?$")
_SLASH = re.compile(r"^(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)$")
_DEC = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def parse_number(s: str) -> Fraction | None:
    """An exact rational for a normalised plain number: "12", "-0.25", "3/4", "\\frac{3}{4}",
    "\\frac34", "-\\frac{1}{2}", "2\\frac{1}{2}" and "3\\frac14" (mixed numbers), "0.1\\overline{6}" (a
    repeating decimal, = 1/6), "1e-3"; else None."""
    s = s.strip()
    if _DEC.match(s):
        return Fraction(s)
    m = _SLASH.match(s)
    if m:
        den = Fraction(m.group(2))
        return Fraction(m.group(1)) / den if den != 0 else None
    m = _FRAC.match(s)
    if m:
        if m.group(2) is not None:
            sign, num, den = m.group(1), int(m.group(2)), int(m.group(3))
        else:
            sign, num, den = m.group(4), int(m.group(5)), int(m.group(6))
        if den == 0:
            return None
        value = Fraction(num, den)
        return -value if sign else value
    m = _MIXED.match(s)
    if m:
        num, den = (int(m.group(3)), int(m.group(4))) if m.group(3) else (int(m.group(5)), int(m.group(6)))
        if 0 < num < den:
            value = int(m.group(2)) + Fraction(num, den)
            return -value if m.group(1) else value
    m = _REPEATING.match(s)
    if m:  # a.b(c) = a + (bc - b) / (10^|b| (10^|c| - 1))
        whole, fixed, rep = int(m.group(2) or 0), m.group(3), m.group(4)
        value = whole + Fraction(int(fixed + rep) - int(fixed or 0), 10 ** len(fixed) * (10 ** len(rep) - 1))
        return -value if m.group(1) else value
    return None

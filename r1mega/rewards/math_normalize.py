"""String normalisation of math answers and exact parsing of plain numbers.

``normalize`` rewrites the surface forms that mean the same answer to one form: ``$``, ``\\left``,
``\\right``, spacing commands (``\\!``, ``\\,``, ``\\;``, ``\\quad``), ``\\dfrac``/``\\tfrac`` ->
``\\frac``, ``\\text{..}``/``\\mathrm{..}``/``\\mbox{..}`` -> contents, degrees (``^\\circ``), trailing
units ("5 cm", "\\$18", "3 dollars"), thousands separators, "x \\in S" -> "S", "(A)" -> "A".
Percent signs are removed but remembered (``is_percent``) so 50% can equal both 50 and 0.5.
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
_TEXT_UNIT = re.compile(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z ]*\}(?:\^\{?[23]\}?)?\s*$")
_TEXT_CMDS = ("text", "textbf", "textit", "mathrm", "mathbf", "mbox", "operatorname", "mathit", "rm")
_SPACES = re.compile(r"\\[,;:! ]|\\q?quad|~|\\displaystyle|\\limits|\\nonumber|\\mathrm(?=\{)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_ASSIGN = re.compile(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+|[a-zA-Z]_\{?\w+\}?)\s*=\s*(?=\S)")


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


def normalize(s: str) -> tuple[str, bool]:
    """(normalised answer string, had a percent sign)."""
    s = s.strip()
    s = s.replace("\n", " ").replace("\u2212", "-").replace("\u00b0", "^\\circ")
    s = re.sub(r"\\boxed\s*(?=\{)", "", s) if s.startswith("\\boxed") else s
    if s.startswith("\\boxed{") or s.startswith("{"):
        got = read_braced(s, s.index("{"))
        if got and got[1] == len(s):
            s = got[0]
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\bigl", "").replace("\\bigr", "")
    s = _SPACES.sub(" ", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ").replace("\\neq", "\\ne")
    s = _TEXT_UNIT.sub("", s)  # "5\\text{ m}": a word in \\text after a number at the end is a unit
    s = unwrap_command(s, _TEXT_CMDS)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ", "", s)
    s = s.replace("\\$", "").replace("\\\\%", "%").replace("\\%", "%")
    percent = "%" in s or s.rstrip().endswith("percent")
    s = s.replace("%", "")
    s = s.strip().rstrip(".").strip()
    for _ in range(2):
        s = _UNIT_RE.sub("", s).strip()
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)
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
    return s, percent




def strip_assignment(s: str) -> str:
    """"x=5" -> "5" (a single variable on the left of the only "="); other strings unchanged."""
    return _ASSIGN.sub("", s, count=1) if s.count("=") == 1 else s

_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?)\\frac(\d)(\d)$")
_MIXED = re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_SLASH = re.compile(r"^(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)$")
_DEC = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def parse_number(s: str) -> Fraction | None:
    """An exact rational for a normalised plain number: "12", "-0.25", "3/4", "\\frac{3}{4}",
    "\\frac34", "-\\frac{1}{2}", "2\\frac{1}{2}" (mixed number = 5/2), "1e-3"; else None."""
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
    if m and int(m.group(3)) < int(m.group(4)):
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -value if m.group(1) else value
    return None

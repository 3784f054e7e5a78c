"""The import rules of docs/architecture.md, checked on the source with ``ast`` (no imports run).

Every module of ``r1mega/`` and ``kernels/`` (as ``r1mega_kernels``) is parsed; every import at
any depth (inside functions too) is resolved to a module and checked against the doc's table of
parts and its rules. A violation names ``file:line``, the import and the rule.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
HEAVY = ("megatron", "vllm", "triton", "transformer_engine", "apex", "r1mega_kernels")
PURE_PARTS = ("types", "config", "data", "rewards", "algorithms", "plan")
PURE_MODULES = ("r1mega.models.arch", "r1mega.models.params", "r1mega.parallel.layout", "r1mega.sandbox.run")
TORCH_FREE_PARTS = ("types", "config", "rewards", "plan")
NOT_FOR_MODELS = ("trainer", "rollout", "eval", "checkpoint", "reward_model", "rejection", "recipes", "cli")


@dataclass(frozen=True)
class Import:
    file: str          # path relative to the repository
    line: int
    source: str        # importing module, e.g. r1mega.algorithms.loss
    target: str        # imported module (r1mega modules resolved to the deepest known module)
    top_level: bool    # at module level (runs on import), not inside a function


def _modules() -> dict[str, Path]:
    out = {}
    for base, name in (("r1mega", "r1mega"), ("kernels", "r1mega_kernels")):
        for path in sorted((ROOT / base).rglob("*.py")):
            parts = list(path.relative_to(ROOT / base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


def _imports(modules: dict[str, Path]) -> list[Import]:
    found = []
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        top |= {id(c) for n in tree.body if isinstance(n, (ast.If, ast.Try)) for c in ast.walk(n)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            rel = str(path.relative_to(ROOT))
            found += [Import(rel, node.lineno, mod, t, id(node) in top) for t in dict.fromkeys(targets)]
    return found


def _part(module: str) -> str | None:
    """The part of an r1mega / r1mega_kernels module (None: third party)."""
    names = module.split(".")
    if names[0] == "r1mega_kernels":
        return "kernels"
    if names[0] != "r1mega" or len(names) == 1:
        return None
    return names[1]                                   # a subpackage, or the modules cli / types


def _doc_table() -> dict[str, set[str]]:
    """part -> the parts it may import, from the table in docs/architecture.md."""
    table = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 5 and re.fullmatch(r"`\w+`", cells[1]):
            table[cells[1].strip("`")] = set(re.findall(r"`(\w+)`", cells[3]))
    return table


def _pure(module: str) -> bool:
    return _part(module) in PURE_PARTS or module in PURE_MODULES


def _violations(imports: list[Import], table: dict[str, set[str]]) -> list[str]:
    out = []

    def bad(imp: Import, rule: str) -> None:
        out.append(f"{imp.file}:{imp.line}: {imp.source} imports {imp.target}: {rule}")

    for imp in imports:
        src, dst = _part(imp.source), _part(imp.target)
        top = imp.target.split(".")[0]
        if src == "kernels":
            if top == "r1mega":
                bad(imp, "rule 6 (kernels stand alone): r1mega_kernels imports nothing from r1mega")
            continue
        if dst is not None and dst != src and dst not in table.get(src, set()):
            bad(imp, f"rule 1 (layering): part '{src}' may import only {sorted(table.get(src, set()))} "
                     f"(docs/architecture.md), not '{dst}'")
        if src == "models" and dst in NOT_FOR_MODELS:
            bad(imp, f"rule 4 (models know no trainer): models must not import '{dst}'")
        if imp.target == "r1mega.cli" and not imp.source.endswith("__main__"):
            bad(imp, "rule 5 (nothing imports the CLI): only a __main__ entry point may import r1mega.cli")
        if _pure(imp.source):
            if top in HEAVY:
                bad(imp, f"rule 2 (pure parts): a pure module imports no {', '.join(HEAVY)}")
            elif dst is not None and not _pure(imp.target):
                bad(imp, f"rule 2 (pure parts): a pure module imports only pure r1mega modules "
                         f"({', '.join(PURE_PARTS)}; {', '.join(PURE_MODULES)})")
        if (src in TORCH_FREE_PARTS or imp.source in PURE_MODULES) and top == "torch":
            bad(imp, f"rule 3 (no torch in {', '.join(TORCH_FREE_PARTS)} and the pure model/layout modules)")
    return out


def test_the_doc_table_lists_every_part_once():
    modules = _modules()
    parts = {_part(m) for m in modules} - {None}
    table = _doc_table()
    assert set(table) == parts, f"docs/architecture.md parts {sorted(table)} != the code's {sorted(parts)}"
    unknown = {p: sorted(deps - parts) for p, deps in table.items() if deps - parts}
    assert not unknown, f"docs/architecture.md names unknown parts: {unknown}"


def test_imports_follow_the_rules():
    modules = _modules()
    imports = _imports(modules)
    assert len(imports) > 500  # the scan sees the code (imports inside functions included)
    problems = _violations(imports, _doc_table())
    # importing a pure module runs its package's __init__: that must be pure at module level too
    for pure in PURE_MODULES:
        package = pure.rsplit(".", 1)[0]
        for imp in imports:
            if imp.source == package and imp.top_level and (
                    imp.target.split(".")[0] in HEAVY or (_part(imp.target) and not _pure(imp.target))):
                problems.append(f"{imp.file}:{imp.line}: {imp.source} imports {imp.target} at module level: rule 2 "
                                f"(pure parts): importing {pure} runs {package}/__init__.py")
    assert not problems, "import rules of docs/architecture.md broken:\n" + "\n".join(problems)

"""The house keeps the plan of docs/ARCHITECTURE.md: every import arrow is allowed there.

Every module of ``bowsvm/`` and every script of ``jobs/`` is parsed (not imported);
all its imports count, at module level, inside functions and under TYPE_CHECKING.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def read_plan(text: str) -> tuple[dict, dict]:
    """``({module prefix: part}, {part: allowed parts})`` from the doc's parts table."""
    block = text.split("<!-- parts: begin", 1)[1].split("<!-- parts: end", 1)[0]
    prefixes, allowed = {}, {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("part", "") or set(cells[0]) <= set("-"):
            continue
        part, modules, may = cells
        for m in re.findall(r"`([^`]+)`", modules):
            prefixes[m] = part
        allowed[part] = set() if may == "-" else {p.strip() for p in may.split(",")}
    return prefixes, allowed


def part_of(module: str, prefixes: dict) -> str | None:
    """The part of a dotted module name: its longest listed prefix."""
    best = None
    for p in prefixes:
        if module == p or module.startswith(p + "."):
            if best is None or len(p) > len(best):
                best = p
    if best == "bowsvm" and module != "bowsvm":  # `bowsvm` names only the package's face
        return None
    return prefixes.get(best)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import statement, wherever it stands."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((node.lineno, target))
            # `from bowsvm import stages` imports the module bowsvm.stages
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return out


def violations(files, prefixes, allowed, known) -> list[str]:
    """Every arrow the plan does not allow, as ``file:line: a (part) -> b (part)``."""
    bad = []
    for path, source in files:
        mod = module_name(path)
        src_part = part_of(mod, prefixes)
        if src_part is None:
            bad.append(f"{path.relative_to(ROOT)}: module {mod} is on no part of the plan")
            continue
        seen = set()
        for line, target in imports_of(source, mod, path.name == "__init__.py"):
            if not (target == "bowsvm" or target.startswith("bowsvm.") or target.startswith("jobs")):
                continue
            if target not in known and target.rsplit(".", 1)[0] in known:
                continue  # `from bowsvm.x import name`: the name is no module; x counted already
            dst_part = part_of(target, prefixes)
            if dst_part is None or (line, dst_part) in seen:
                continue
            seen.add((line, dst_part))
            same_stage = (src_part == dst_part == "stages" and target.startswith("bowsvm.stages.")
                          and mod.startswith("bowsvm.stages.") and target != mod)
            if same_stage:
                bad.append(f"{path.relative_to(ROOT)}:{line}: stage {mod} imports stage {target}")
            elif dst_part != src_part and dst_part not in allowed[src_part]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {mod} ({src_part}) -> "
                           f"{target} ({dst_part}) is not allowed by docs/ARCHITECTURE.md")
    return bad


def source_files():
    paths = sorted((ROOT / "bowsvm").rglob("*.py")) + sorted((ROOT / "jobs").glob("*.py"))
    return [(p, p.read_text()) for p in paths if "__pycache__" not in p.parts]


def known_modules(files) -> set:
    return {module_name(p) for p, _ in files}


def test_plan_is_a_topological_order():
    prefixes, allowed = read_plan(DOC.read_text())
    order = list(allowed)
    for i, part in enumerate(order):
        for dep in allowed[part]:
            assert dep in allowed, f"part {part!r} may import {dep!r}, which is no part"
            assert order.index(dep) < i, f"{part!r} -> {dep!r} points up the table"


def test_every_import_is_allowed_by_the_plan():
    prefixes, allowed = read_plan(DOC.read_text())
    files = source_files()
    bad = violations(files, prefixes, allowed, known_modules(files))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source,expect", [
    ("def f():\n    from bowsvm.stages import train\n", "bowsvm.asgd.x (asgd) -> bowsvm.stages"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bowsvm.io import read_manifest\n",
     "bowsvm.asgd.x (asgd) -> bowsvm.io (io)"),
    ("from ..evaluation import metrics\n", "bowsvm.asgd.x (asgd) -> bowsvm.evaluation"),
])
def test_a_forbidden_arrow_is_found(source, expect):
    """The checker sees function-level, TYPE_CHECKING and relative imports."""
    prefixes, allowed = read_plan(DOC.read_text())
    path = ROOT / "bowsvm" / "asgd" / "x.py"
    known = known_modules(source_files()) | {"bowsvm.asgd.x"}
    bad = violations([(path, source)], prefixes, allowed, known)
    assert any(expect in b for b in bad), bad


def test_a_stage_importing_a_stage_is_found():
    prefixes, allowed = read_plan(DOC.read_text())
    path = ROOT / "bowsvm" / "stages" / "score.py"
    known = known_modules(source_files()) | {"bowsvm.stages.train"}
    bad = violations([(path, "from bowsvm.stages.train import x\n")], prefixes, allowed, known)
    assert any("imports stage bowsvm.stages.train" in b for b in bad), bad

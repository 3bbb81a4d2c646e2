"""The package keeps the shape BUILD_NOTES promises: small rooms, no reaching into another module's private names.

Sizes count lines of code (not blank, not only a comment, not inside a docstring): a module
holds at most 700, a function at most 100, a class at most 400.
"""

import ast
import io
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("tfft", "experiments")
FILES = sorted(p for folder in OURS for p in (REPO / folder).rglob("*.py"))
LIMITS = {"module": 700, "function": 100, "class": 400}


def _name(path):
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def _docstring_lines(tree):
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def _code_lines(source, tree):
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    docs = _docstring_lines(tree)
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docs)
    return lines


def _oversized(path):
    source = path.read_text()
    tree = ast.parse(source)
    lines = _code_lines(source, tree)
    found = []
    if len(lines) > LIMITS["module"]:
        found.append(f"{_name(path)}: {len(lines)} lines of code")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            count = sum(node.lineno <= n <= node.end_lineno for n in lines)
            if count > LIMITS[kind]:
                found.append(f"{_name(path)}:{node.lineno} {kind} {node.name}: {count} lines of code")
    return found


def _private_reaches(path):
    """`from tfft.x import _name` and `module._name` on one of our modules, in `path`."""
    tree = ast.parse(path.read_text())
    ours, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in OURS):
            for alias in node.names:
                ours.add(alias.asname or alias.name)
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{_name(path)}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.Import):
            ours.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in OURS)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{_name(path)}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_the_checks_see_the_package():
    assert len(FILES) > 40 and REPO / "tfft" / "finetune.py" in FILES


def test_no_module_function_or_class_is_over_its_size():
    found = [line for path in FILES for line in _oversized(path)]
    assert not found, "split these along their seams (BUILD_NOTES, package map):\n" + "\n".join(found)


def test_no_module_uses_another_modules_private_names():
    found = [line for path in FILES for line in _private_reaches(path)]
    assert not found, "make what is shared a named internal function:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from tfft.data import _as_dataset\n", "imports _as_dataset"),
    ("from tfft import models\nmodels._head(1)\n", "uses models._head"),
    ("from . import io\nio._tmp\n", "uses io._tmp"),
])
def test_the_private_name_check_catches_a_reach(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert any(expected in line for line in _private_reaches(path))


def test_the_size_check_counts_code_not_docstrings(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(100))
    path = tmp_path / "probe.py"
    path.write_text(f'def small():\n    """{"doc " * 10}\n' + "\n" * 200 + '    """\n    return 1\n\n\n'
                    f"def big():\n{body}\n")
    found = _oversized(path)
    assert len(found) == 1 and "function big: 101 lines" in found[0]  # the def line and 100 below

"""The code's shape: functions short enough to read at once, modules short enough to hold.

Checked with ``ast``, so a function's length is from its ``def`` line to its last line
(docstring and comments included, decorators not). ``make lint`` adds ruff's statement and
complexity limits (pyproject.toml); these are the ones ruff cannot count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_ROOT_SCRIPT_LINES = 80  # the root scripts only wire the library up
ROOT_SCRIPTS = ("audio_manipulations.py", "enhance_file.py", "main.py", "passthrough_model.py",
                "tfl_model_exporter.py")
FUNCTION_FOLDERS = ("enhancer", "service", "bench", "tools")
MODULE_FOLDERS = ("enhancer", "service")


def _sources(folder: str) -> list[Path]:
    if folder == ".":  # the root's own scripts; test_api.py is a test suite, not a script
        return sorted(p for p in ROOT.glob("*.py") if p.name != "test_api.py")
    return sorted((ROOT / folder).rglob("*.py"))


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
            f"({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


@pytest.mark.parametrize("folder", [*FUNCTION_FOLDERS, "."])
def test_no_function_is_longer_than_60_lines(folder):
    long = [entry for path in _sources(folder) for entry in _long_functions(path)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: split them:\n" + "\n".join(long)


@pytest.mark.parametrize("folder", MODULE_FOLDERS)
def test_no_module_is_longer_than_400_lines(folder):
    long = [f"{path.relative_to(ROOT)} ({_lines(path)} lines)" for path in _sources(folder)
            if _lines(path) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: split them:\n" + "\n".join(long)


@pytest.mark.parametrize("name", ROOT_SCRIPTS)
def test_each_root_script_is_under_80_lines(name):
    assert _lines(ROOT / name) < MAX_ROOT_SCRIPT_LINES, (
        f"{name} has {_lines(ROOT / name)} lines: move its work into the library")

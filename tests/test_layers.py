"""The package's layering: no import cycle among the project's modules, and the import-linter
contracts in pyproject.toml (``make lint`` runs ``lint-imports``) really refuse an import
that breaks them, so that a contract that checks nothing cannot pass unnoticed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

from tests.helpers import ROOT

PACKAGES = ("enhancer", "service", "tools", "bench", "training")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = [contract["name"] for contract in tomllib.loads(
    (ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]]


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of a directed graph (Tarjan's, without recursion):
    each cycle lies within one; a component of one module is a cycle only with a self-edge."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    return [c for c in strongly_connected(edges)
            if len(c) > 1 or any(m in edges.get(m, ()) for m in c)]


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"a"}, "b": set()}) == [{"a"}]
    assert sorted(map(sorted, cycles({"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}}))) == [
        ["a", "b"], ["c", "d"]]
    long = {f"m{i}": {f"m{i + 1}"} for i in range(5000)} | {"m5000": {"m0"}}
    assert [len(c) for c in cycles(long)] == [5001]  # no recursion limit


def project_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports, as run: what grimp reads from the source,
    plus the lazy re-exports of ``enhancer/__init__.py``."""
    # Imports under ``if TYPE_CHECKING:`` are left out: they are for annotations, never run
    # (enhancer.stream and enhancer.audio_enhancer name each other's types that way).
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    edges = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    # ``from enhancer import AudioEnhancer`` imports enhancer.audio_enhancer on first use,
    # through importlib, which grimp cannot see: those edges are added, not excluded.
    import enhancer

    edges["enhancer"] |= set(enhancer._HOMES.values())
    return edges


def test_no_import_cycle_among_the_projects_modules():
    edges = project_imports()
    assert {"enhancer.audio_enhancer", "service.app", "tools.settings_table"} <= edges.keys()
    assert "enhancer.audio_enhancer" in edges["enhancer"]
    found = cycles(edges)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


# ------------------------------------------------------------------ the contracts bite


def copy_of_the_packages(destination: Path) -> Path:
    """The packages' Python files and pyproject.toml, as lint-imports reads them."""
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in source.parts:
                target = destination / source.relative_to(ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
    shutil.copyfile(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def lint_imports(folder: Path) -> tuple[int, str, dict[str, str]]:
    """Run lint-imports in ``folder``: its exit status, its output, and each contract's
    verdict (KEPT or BROKEN)."""
    # Without PYTHONPATH, the packages are the copy's (lint-imports puts its folder first).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    flat = " ".join(output.split())  # long contract names are wrapped
    verdicts = {}
    for name in CONTRACTS:
        found = re.search(re.escape(name) + r" (KEPT|BROKEN)", flat)
        verdicts[name] = found.group(1) if found else "missing"
    return result.returncode, output, verdicts


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    return copy_of_the_packages(tmp_path_factory.mktemp("unmodified"))


def test_the_contracts_are_kept_by_the_unmodified_packages(packages):
    assert len(CONTRACTS) >= 4
    status, output, verdicts = lint_imports(packages)
    assert status == 0, output
    assert verdicts == dict.fromkeys(CONTRACTS, "KEPT"), output
    assert "Analyzed" in output and f"{len(CONTRACTS)} kept, 0 broken" in output, output


def contract(start: str) -> str:
    matching = [name for name in CONTRACTS if name.startswith(start)]
    assert len(matching) == 1, (start, CONTRACTS)
    return matching[0]


# Each a deliberate bad import at the top of one module, the contracts it breaks, and those it
# may break too (the rest must stay kept).
BAD_IMPORTS = [
    # Through the service every module of the library reaches every other, so the backends
    # reach each other too.
    pytest.param("enhancer/model/grid.py", "import service.app",
                 ["Layers:", "The library never imports"], ["Backends are independent"],
                 id="the library imports the service"),
    pytest.param("enhancer/audio/decode.py", "import enhancer.stream", ["Layers:"], [],
                 id="a lower layer imports a higher one"),
    pytest.param("enhancer/backends/inline.py", "import enhancer.backends.pool.pool",
                 ["Backends are independent"], [], id="a backend imports another"),
    pytest.param("service/routes.py", "import tensorflow", ["The serving path never imports"],
                 [], id="the service imports TensorFlow"),
]


@pytest.mark.parametrize("module, line, broken, maybe_broken", BAD_IMPORTS)
def test_an_import_against_a_contract_fails_lint_imports_naming_it(tmp_path, module, line,
                                                                   broken, maybe_broken):
    folder = copy_of_the_packages(tmp_path)
    path = folder / module
    path.write_text(f"{line}  # deliberately against the contracts\n{path.read_text()}")
    status, output, verdicts = lint_imports(folder)
    assert status != 0, output
    expected = dict.fromkeys(CONTRACTS, "KEPT") | {contract(s): "BROKEN" for s in broken}
    for start in maybe_broken:
        expected[contract(start)] = verdicts[contract(start)]
    assert verdicts == expected, output
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {line.split()[1]} (l.1)" in output, output

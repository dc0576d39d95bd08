"""Every fenced code block of README.md and docs/*.md runs as written, the way a user would.

Python blocks are saved to a file and run with the project's Python; shell blocks run with
bash (the project's ``.venv/bin`` first on ``PATH``, ``curl`` failing on an HTTP error). Each
runs in a fresh folder that links every top-level entry of the project, so relative paths
(``audio_samples/``, ``models/``, ``.venv/bin/python``, ``enhance_file.py``) work as in the
project folder and what a block writes stays out of the tree. Blocks that talk to the service
get a real one: ``python main.py`` on a free loopback port (the port substituted for 8080),
started once, serving the ×3 passthrough as its default model (fast and exact) and the
denoiser by name.

A block that cannot run here (``make run``, a benchmark, ``kubectl``...) carries an HTML comment
on the line right before it, ``<!-- not run: why -->``; a block with neither fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, LiveServer

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python": "python", "py": "python", "sh": "shell", "bash": "shell",
            "shell": "shell", "console": "shell"}
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"^<!-- not run: (.+?) -->$")
SERVICE = "127.0.0.1:8080"
TIMEOUT_S = 240  # one block, on a busy 2-core machine
# Entries of the project a block's folder does not need (and must not write into).
UNLINKED = {".git", "build"}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            reason = NOT_RUN.match(before.strip())
            found.append(Block(page.relative_to(ROOT).as_posix(),
                               text.count("\n", 0, match.start()) + 1, match.group(1),
                               match.group(2), reason.group(1) if reason else None))
    return found


BLOCKS = blocks()
TO_RUN = [block for block in BLOCKS if block.not_run is None]


def test_every_block_is_run_or_says_why_not():
    assert BLOCKS, "no code blocks found"
    unexplained = [block.id for block in BLOCKS
                   if block.not_run is None and block.language not in RUNNABLE]
    assert not unexplained, (
        f"blocks that are neither Python nor shell and carry no <!-- not run: why --> "
        f"comment: {', '.join(unexplained)}")
    for block in BLOCKS:
        assert block.not_run is None or len(block.not_run.strip()) > 5, block.id


def test_a_model_card_shown_is_the_shipped_one():
    shown = [block for block in BLOCKS if block.language == "json"]
    for block in shown:
        card = json.loads(block.code)
        named = re.search(r"models/[\w.-]+\.json", block.not_run or "")
        if named:
            assert card == json.loads((ROOT / named.group(0)).read_text()), block.id


@pytest.fixture(scope="module")
def service():
    server = None

    def start() -> LiveServer:
        nonlocal server
        if server is None:
            server = LiveServer()
        return server

    yield start
    if server is not None:
        server.stop()


def workdir(tmp_path: Path) -> Path:
    for entry in ROOT.iterdir():
        if entry.name not in UNLINKED:
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


@pytest.mark.parametrize("block", TO_RUN, ids=[block.id for block in TO_RUN])
def test_the_block_runs_as_written(block, service, tmp_path):
    folder = workdir(tmp_path)
    code = block.code
    if SERVICE in code:
        code = code.replace(SERVICE, f"127.0.0.1:{service().port}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if RUNNABLE[block.language] == "python":
        (folder / "example.py").write_text(code)
        command = [sys.executable, "example.py"]
    else:
        # curl exits 0 on an HTTP error unless told otherwise; a user would see the body.
        (folder / "example.sh").write_text(
            'curl() { command curl --silent --show-error --fail-with-body "$@"; }\n' + code)
        command = ["bash", "-e", "-o", "pipefail", "example.sh"]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, (
        f"{block.id} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
        f"\n--- stderr\n{done.stderr[-3000:]}")
    written = [path for path in folder.rglob("*")
               if path.is_file() and not path.is_symlink()
               and path.name not in ("example.py", "example.sh")
               and not any(parent.is_symlink() for parent in path.parents)]
    empty = [path.relative_to(folder).as_posix() for path in written if path.stat().st_size == 0]
    assert not empty, f"{block.id} wrote empty files: {empty}"

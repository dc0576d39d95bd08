"""Careless library use gets one clear line (issue 34, finding 8).

A script that starts an ``AudioEnhancer`` at its top level, without
``if __name__ == "__main__":``, is imported again by each spawned worker, which would start a
pool of its own. The workers refuse at once and the script ends with the advice.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enhancer.backends.pool.worker_process import (
    BOOTSTRAP_EXIT_STATUS,
    GUARD_ADVICE,
    WORKER_NAME,
    refuse_start_while_bootstrapping,
)
from enhancer.errors import ModelError
from tests.helpers import ROOT

UNGUARDED = """\
import numpy as np
from enhancer import AudioEnhancer

with AudioEnhancer("models/denoiser_48k.tflite") as e:
    print(e.enhance(np.zeros(48000, np.float32), 48000).shape)
"""


def test_a_script_without_the_main_guard_exits_with_one_line_of_advice(tmp_path: Path):
    script = tmp_path / "careless.py"
    script.write_text(UNGUARDED)
    started = time.monotonic()
    # The venv's python runs the file as a user would, from the project folder.
    with subprocess.Popen([sys.executable, str(script)], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}) as process:
        stdout, stderr = process.communicate(timeout=120)
    ran = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    took = time.monotonic() - started
    lines = ran.stderr.strip().splitlines()
    assert ran.returncode == 1, ran.stderr
    assert lines[-1] == f"enhancer.errors.ModelError: {GUARD_ADVICE}", ran.stderr
    assert 'put the code that starts it under `if __name__ == "__main__":`' in lines[-1]
    # One traceback (the parent's, from the script's line), nothing from the workers.
    assert ran.stderr.count("Traceback") == 1 and len(lines) < 20, ran.stderr
    assert "leaked shared_memory" not in ran.stderr
    assert "RuntimeError" not in ran.stderr and "keep dying" not in ran.stderr
    assert ran.stdout == ""
    # Its arenas would be named after it (WorkerPool.arena_prefix); its workers made none.
    assert not [name for name in os.listdir("/dev/shm")
                if name.startswith(f"enhancer-{process.pid}-")]
    assert took < 15, f"it took {took:.1f} s"


@pytest.fixture
def bootstrapping(monkeypatch):
    """This process as a spawned child is while it imports its parent's main script."""
    process = multiprocessing.current_process()
    monkeypatch.setattr(process, "_inheriting", True, raising=False)
    return process


def test_a_worker_of_ours_that_is_still_starting_exits_quietly_with_its_status(
        bootstrapping, monkeypatch):
    monkeypatch.setattr(bootstrapping, "name", WORKER_NAME)
    with pytest.raises(SystemExit) as exited:
        refuse_start_while_bootstrapping()
    assert exited.value.code == BOOTSTRAP_EXIT_STATUS


def test_any_other_starting_child_gets_the_advice(bootstrapping):
    with pytest.raises(ModelError) as refused:
        refuse_start_while_bootstrapping()
    assert str(refused.value) == GUARD_ADVICE


def test_a_process_done_starting_may_start_an_enhancer():
    assert not getattr(multiprocessing.current_process(), "_inheriting", False)
    refuse_start_while_bootstrapping()  # returns: nothing to refuse

"""For every test run (tests/ and test_api.py): jobs kept in a folder of the run's own.

Without it, each server a test starts would keep its jobs in the user's data folder
(``~/.local/share/enhancer/jobs``), shared with other runs and with ``make run``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_JOBS_DIR = "JOBS_DIR"


def pytest_configure(config: pytest.Config) -> None:
    if _JOBS_DIR not in os.environ:
        folder = tempfile.mkdtemp(prefix="enhancer-test-jobs-")
        os.environ[_JOBS_DIR] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))

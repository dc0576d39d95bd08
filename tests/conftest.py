"""Shared fixtures: a real two-worker pool and the inline reference, both on the ×3 model."""

from __future__ import annotations

import pytest

from enhancer import AudioEnhancer
from tests.helpers import PASSTHROUGH


@pytest.fixture(scope="session")
def pool() -> AudioEnhancer:
    with AudioEnhancer(PASSTHROUGH, num_processes=2) as enhancer:
        yield enhancer


@pytest.fixture(scope="session")
def inline() -> AudioEnhancer:
    with AudioEnhancer(PASSTHROUGH, num_processes=0) as enhancer:
        yield enhancer

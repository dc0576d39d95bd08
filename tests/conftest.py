"""Shared fixtures: the shipped model and a real two-worker pool."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from enhance_file import AudioEnhancer

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = ROOT / "models" / "passthrough_model_lite.tflite"
SAMPLES = ROOT / "audio_samples"


def random_audio(length: int, seed: int) -> np.ndarray:
    """Speech-level noise, finite float32."""
    return (np.random.default_rng(seed).standard_normal(length) * 0.1).astype(np.float32)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal in dtype, shape and every bit (so -0.0 differs from 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint32), b.view(np.uint32))


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (exited, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.fixture(scope="session")
def pool() -> AudioEnhancer:
    with AudioEnhancer(MODEL_PATH, num_processes=2) as enhancer:
        yield enhancer


@pytest.fixture(scope="session")
def inline() -> AudioEnhancer:
    with AudioEnhancer(MODEL_PATH, num_processes=0) as enhancer:
        yield enhancer


def run_python(code: str, **kwargs):
    """Run ``code`` in a fresh interpreter from the project folder."""
    import subprocess

    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, **kwargs)



"""Shared fixtures: a real two-worker pool and the inline reference, both on the ×3 model."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from enhancer import AudioEnhancer
from tests.helpers import PASSTHROUGH, free_port
from tests.test_jobs_support import as_postgres, postgres_bin


@pytest.fixture(scope="session")
def pool() -> AudioEnhancer:
    with AudioEnhancer(PASSTHROUGH, num_processes=2) as enhancer:
        yield enhancer


@pytest.fixture(scope="session")
def inline() -> AudioEnhancer:
    with AudioEnhancer(PASSTHROUGH, num_processes=0) as enhancer:
        yield enhancer


@pytest.fixture(scope="session")
def lookback_model(tmp_path_factory) -> Path:
    """A stateless model with look-back and a stream step twin, as the previous denoiser was
    (an MLP over the last frames; small and untrained): the plumbing for models that see the
    frames before each block, which the shipped recurrent denoiser no longer exercises."""
    import json

    from training.denoiser_model import build_models, context_frames, export_fp16, stream_state_size

    folder = tmp_path_factory.mktemp("lookback")
    models = build_models(hidden=16, seed=3)
    model = folder / "lookback.tflite"
    export_fp16(models.serving, model)
    export_fp16(models.stream_step, folder / "lookback_stream_step.tflite")
    model.with_suffix(".json").write_text(json.dumps({
        "name": "lookback", "sample_rate": 48000, "frame_length": 1024, "hop_length": 512,
        "window": "sqrt-hann", "context_frames": context_frames(),
        "stream_step": {"model": "lookback_stream_step.tflite",
                        "state_size": stream_state_size()}}))
    return model


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server of our own on a free loopback port, for the whole run; each test
    takes a database of its own on it (``tests.test_jobs_support.fresh_database``)."""
    binaries = postgres_bin()
    if binaries is None:
        reason = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must have it (.ci/run installs it)")
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="jobs-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(as_postgres([str(binaries / "initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "jobs"]), check=True, capture_output=True)
    subprocess.run(as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l",
                                 str(folder / "log"), "-o",
                                 f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
                                 "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql://jobs@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "-w", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)

"""Shared fixtures: a real two-worker pool and the inline reference, both on the ×3 model."""

from __future__ import annotations

from pathlib import Path

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

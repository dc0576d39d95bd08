"""The command line, run as users run it: a separate process."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import PASSTHROUGH, ROOT, SAMPLES, run_cli
from tests.test_formats import make_audio

SCRIPT = str(ROOT / "enhance_file.py")
# The ×3 passthrough unless a test says otherwise, so results are exact.
PASSTHROUGH_ENV = {**os.environ, "TF_MODEL_PATH": str(PASSTHROUGH)}


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, env=PASSTHROUGH_ENV if env is None else env)


def test_round_trip_at_48k_is_exactly_three_times(tmp_path):
    out = tmp_path / "enhanced.raw"
    result = cli("--source-file", str(SAMPLES / "speech_48000.f32"), "--destination-file",
                 str(out), "--num-processes", "2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no XNNPACK line, no progress bar for a short file
    source = np.fromfile(SAMPLES / "speech_48000.f32", dtype="<f4")
    np.testing.assert_array_equal(np.fromfile(out, dtype="<f4"), source * np.float32(3))


@pytest.mark.parametrize("rate", [16000, 32000])
def test_other_rates_keep_length_and_rate(tmp_path, rate):
    out = tmp_path / "enhanced.raw"
    result = cli("--source-file", str(SAMPLES / f"speech_{rate}.f32"), "--destination-file",
                 str(out), "--sample-rate", str(rate))
    assert result.returncode == 0, result.stderr
    source = np.fromfile(SAMPLES / f"speech_{rate}.f32", dtype="<f4")
    enhanced = np.fromfile(out, dtype="<f4")
    assert enhanced.shape == source.shape
    # Resampled there and back: 3× the input up to the filters' ripple.
    core = slice(1000, -1000)
    assert np.sqrt(np.mean((enhanced[core] - 3 * source[core]) ** 2)) < 0.01


def test_inline_mode(tmp_path):
    out = tmp_path / "enhanced.raw"
    result = cli("--source-file", str(SAMPLES / "speech_48000.f32"), "--destination-file",
                 str(out), "--num-processes", "0")
    assert result.returncode == 0, result.stderr
    source = np.fromfile(SAMPLES / "speech_48000.f32", dtype="<f4")
    np.testing.assert_array_equal(np.fromfile(out, dtype="<f4"), source * np.float32(3))


def test_help_explains_every_flag():
    result = cli("--help")
    assert result.returncode == 0
    for flag in ("--source-file", "--destination-file", "--model-path", "--num-processes",
                 "--sample-rate", "--format"):
        assert flag in result.stdout


def _bad_inputs(tmp_path):
    nan = np.array([0.1, np.nan, 0.2], dtype="<f4")
    cases = {
        "missing": (tmp_path / "nope.raw", "source file not found"),
        "empty": (b"", "the audio is empty"),
        "odd bytes": (b"\x00" * 10, "10 bytes is not a whole number of f32le samples"),
        "nan": (nan.tobytes(), "1 NaN or infinite samples"),
        "inf": (np.array([np.inf], "<f4").tobytes(), "NaN or infinite"),
    }
    for name, (content, message) in cases.items():
        if isinstance(content, bytes):
            path = tmp_path / f"{name.replace(' ', '_')}.raw"
            path.write_bytes(content)
            content = path
        yield name, content, message


def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path):
    for name, source, message in _bad_inputs(tmp_path):
        out = tmp_path / "out.raw"
        result = cli("--source-file", str(source), "--destination-file", str(out))
        assert result.returncode == 2, name
        assert message in result.stderr, (name, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, name
        assert not out.exists(), name


@pytest.mark.parametrize("args, message", [
    (["--model-path", "models/missing.tflite"], "model file not found: models/missing.tflite"),
    (["--model-path", "requirements.txt"], "cannot load model requirements.txt"),
    (["--sample-rate", "7999"], "--sample-rate must be between 8000 and 192000"),
    (["--num-processes", "-2"], "--num-processes must be 0 or more"),
])
def test_bad_model_or_flag_exits_2_and_keeps_old_output(tmp_path, args, message):
    out = tmp_path / "out.raw"
    out.write_bytes(b"previous result")
    result = cli("--source-file", str(SAMPLES / "speech_16000.f32"), "--destination-file",
                 str(out), *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.raw"]  # no temporary file left


def test_long_input_shows_a_progress_bar(tmp_path):
    source = tmp_path / "long.raw"
    np.zeros(48000 * 20, "<f4").tofile(source)
    # The bar is drawn only on a terminal: give the CLI's stderr one.
    controller, terminal = pty.openpty()
    # A new pty is 0 columns wide, which tqdm fills with nothing.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    os.set_blocking(controller, False)
    try:
        result = subprocess.run([sys.executable, SCRIPT, "--source-file", str(source),
                                 "--destination-file", str(tmp_path / "out.raw")],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal, timeout=120,
                                env=PASSTHROUGH_ENV)
        drawn = os.read(controller, 65536).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert result.returncode == 0, drawn
    assert "frame" in drawn and "/938" in drawn  # ceil(960000 / 1024)
    # Without a terminal, nothing is drawn.
    piped = cli("--source-file", str(source), "--destination-file", str(tmp_path / "o2.raw"))
    assert piped.returncode == 0 and piped.stderr == ""


def test_cli_and_service_never_import_tensorflow(tmp_path):
    code = ("import sys, enhance_file, main\n"
            "from enhancer.cli import run_cli\n"
            "from service.app import create_app\n"
            "create_app()\n"
            f"run_cli(['--source-file', {str(SAMPLES / 'speech_16000.f32')!r}, "
            f"'--destination-file', {str(tmp_path / 'o.raw')!r}, '--sample-rate', '16000'])\n"
            "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'keras'))]\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_default_model_is_the_speech_denoiser(tmp_path):
    from enhancer.metrics import si_sdr

    clean, rate = sf.read(SAMPLES / "speech_48000.wav", dtype="float32")
    noise = np.random.default_rng(5).standard_normal(len(clean)).astype(np.float32)
    noisy = clean + noise * np.float32(np.std(clean) / np.std(noise) / 3)  # about 10 dB SNR
    source, out = tmp_path / "noisy.wav", tmp_path / "clean.wav"
    sf.write(source, noisy, rate, subtype="FLOAT")
    env = {k: v for k, v in os.environ.items() if k != "TF_MODEL_PATH"}
    result = cli("--source-file", str(source), "--destination-file", str(out), env=env)
    assert result.returncode == 0, result.stderr
    enhanced, _ = sf.read(out, dtype="float32")
    assert enhanced.shape == noisy.shape
    assert si_sdr(enhanced, clean) > si_sdr(noisy, clean) + 3


# ------------------------------------------------------------------ formats


def test_cli_keeps_a_stereo_int16_wav_and_warns_of_clipping(tmp_path):
    out = tmp_path / "out.wav"
    result = cli("--source-file", str(SAMPLES / "speech_stereo_48000.wav"),
                 "--destination-file", str(out))
    assert result.returncode == 0, result.stderr
    source, rate = sf.read(SAMPLES / "speech_stereo_48000.wav", dtype="int16")
    enhanced, out_rate = sf.read(out, dtype="int16")
    info = sf.info(out)
    assert (info.format, info.subtype, info.channels, out_rate) == ("WAV", "PCM_16", 2, rate)
    expected = np.clip(source.astype(np.int64) * 3, -32768, 32767)
    np.testing.assert_array_equal(enhanced, expected)
    clipped = int(np.count_nonzero(expected != source.astype(np.int64) * 3))
    assert clipped > 0
    assert result.stderr == f"warning: {clipped} samples clipped to the integer range\n"


def test_cli_reads_s16le(tmp_path):
    source = tmp_path / "in.s16"
    pcm = (np.random.default_rng(1).standard_normal(16000) * 3000).astype("<i2")
    pcm.tofile(source)
    out = tmp_path / "out.s16"
    result = cli("--source-file", str(source), "--destination-file", str(out), "--format",
                 "s16le", "--sample-rate", "16000")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size == source.stat().st_size


def test_cli_refuses_unsupported_and_corrupt_files(tmp_path):
    ogg = tmp_path / "a.ogg"
    ogg.write_bytes(b"OggS" + b"\x00" * 100)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes((SAMPLES / "speech_stereo_48000.wav").read_bytes()[:5000])
    for source, message in ((ogg, "Ogg audio is not supported; supported formats:"),
                            (truncated, "the WAV data is truncated")):
        out = tmp_path / "out.wav"
        result = cli("--source-file", str(source), "--destination-file", str(out))
        assert result.returncode == 2
        assert message in result.stderr and result.stderr.count("\n") == 1
        assert not out.exists()


def test_cli_folder_mode_enhances_mixed_files_and_reports_skipped(tmp_path):
    source, dest = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    (source / "a.wav").write_bytes(make_audio("WAV", "PCM_24", 44100, 2))
    (source / "b.flac").write_bytes(make_audio("FLAC", "PCM_16", 22050, 1))
    (source / "c.f32").write_bytes(make_audio("raw", "f32le", 48000, 1))
    (source / "d.wav").write_bytes(make_audio("WAV", "FLOAT", 48000, 1)[:3000])
    (source / "notes.txt").write_text("not audio")
    result = cli("--source-file", str(source), "--destination-file", str(dest))
    assert result.returncode == 2
    assert "warning: skipped" in result.stderr and "d.wav" in result.stderr
    assert "1 file(s) in" in result.stderr and "could not be enhanced" in result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["a.wav", "b.flac", "c.f32"]
    for name, expected in (("a.wav", ("WAV", "PCM_24", 44100, 2)),
                           ("b.flac", ("FLAC", "PCM_16", 22050, 1))):
        info = sf.info(dest / name)
        assert (info.format, info.subtype, info.samplerate, info.channels) == expected
        assert info.frames == sf.info(source / name).frames
    raw_in = np.frombuffer((source / "c.f32").read_bytes(), "<f4")
    np.testing.assert_array_equal(np.fromfile(dest / "c.f32", "<f4"), raw_in * np.float32(3))

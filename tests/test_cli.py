"""The command line, run as users run it: a separate process."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.audio_builders import (
    audio_bytes,
    flac,
    lossy_audio,
    make_audio,
    wav_with_bits,
    write_audio,
)
from tests.helpers import (
    DENOISER,
    PASSTHROUGH,
    ROOT,
    SAMPLES,
    run_cli,
    same_bits,
    wait_until_gone,
    workers_of,
)

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
                 "--sample-rate", "--format", "--overwrite"):
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
            "from enhancer.apps.cli import run_cli\n"
            "from service.app import create_app\n"
            "create_app()\n"
            f"run_cli(['--source-file', {str(SAMPLES / 'speech_16000.f32')!r}, "
            f"'--destination-file', {str(tmp_path / 'o.raw')!r}, '--sample-rate', '16000'])\n"
            "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'keras'))]\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_default_model_is_the_speech_denoiser(tmp_path):
    from bench.metrics import si_sdr

    clean, rate = sf.read(SAMPLES / "speech_48000.wav", dtype="float32")
    noise = np.random.default_rng(5).standard_normal(len(clean)).astype(np.float32)
    noisy = clean + noise * np.float32(np.std(clean) / np.std(noise) / 3)  # about 10 dB SNR
    source, out = tmp_path / "noisy.wav", tmp_path / "clean.wav"
    write_audio(source, noisy, rate, subtype="FLOAT")
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
    m4a = tmp_path / "a.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + b"\x00" * 100)
    ogg = tmp_path / "a.ogg"
    ogg.write_bytes(b"OggS" + b"\x00" * 100)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes((SAMPLES / "speech_stereo_48000.wav").read_bytes()[:5000])
    for source, message in ((m4a, "M4A/MP4 audio is not supported; supported formats:"),
                            (ogg, "cannot read the Ogg data"),
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


@pytest.mark.parametrize("container, subtype, rate", [("MP3", "MPEG_LAYER_III", 44100),
                                                      ("OGG", "OPUS", 48000),
                                                      ("OGG", "VORBIS", 22050)])
def test_cli_enhances_mp3_and_ogg_in_their_own_format(tmp_path, container, subtype, rate):
    data, tone = lossy_audio(container, subtype, rate, 2, seconds=3)
    source, out = tmp_path / "in.audio", tmp_path / "out.audio"
    source.write_bytes(data)
    result = cli("--source-file", str(source), "--destination-file", str(out))
    assert result.returncode == 0, result.stderr
    info = sf.info(out)
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        container, subtype, rate, 2, len(tone))
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
    enhanced, _ = sf.read(out, dtype="float32")
    core = slice(len(tone) // 5, -len(tone) // 5)
    error = enhanced[core] - 3 * decoded[core]
    assert np.sqrt(np.mean(error**2)) < 0.2 * np.sqrt(np.mean((3 * decoded[core]) ** 2))


# ------------------------------------------------------------------ streaming


@pytest.mark.parametrize("model, rate, channels", [(DENOISER, 48000, 1),
                                                   (DENOISER, 44100, 2),
                                                   (PASSTHROUGH, 16000, 1)])
def test_a_long_file_is_streamed_to_the_whole_file_result(tmp_path, model, rate, channels):
    # Three minutes: several blocks of BLOCK_MODEL_SAMPLES, which the CLI streams.
    from enhancer import AudioEnhancer

    audio = (np.random.default_rng(rate).standard_normal((rate * 180 + 999, channels))
             * 0.1).astype(np.float32)
    source, out = tmp_path / "long.wav", tmp_path / "out.wav"
    write_audio(source, audio, rate, subtype="FLOAT")
    env = {**PASSTHROUGH_ENV, "TF_MODEL_PATH": str(model)}
    result = cli("--source-file", str(source), "--destination-file", str(out), env=env)
    assert result.returncode == 0, result.stderr
    enhanced, _ = sf.read(out, dtype="float32", always_2d=True)
    with AudioEnhancer(model, num_processes=0) as enhancer:
        whole = enhancer.enhance(audio if channels > 1 else audio[:, 0], rate)
    assert same_bits(enhanced if channels > 1 else enhanced[:, 0], whole)


def test_a_flac_of_unknown_length_is_enhanced_and_a_lying_one_refused(tmp_path):
    audio = (np.random.default_rng(3).standard_normal(96000) * 0.1).astype(np.float32)
    unknown, lying, out = tmp_path / "unknown.flac", tmp_path / "lying.flac", tmp_path / "o.flac"
    unknown.write_bytes(flac(audio, 48000, declared=0))
    lying.write_bytes(flac(audio, 48000, declared=1000))
    result = cli("--source-file", str(unknown), "--destination-file", str(out))
    assert result.returncode == 0, result.stderr
    assert sf.info(out).frames == 96000
    expected = np.clip(np.round(audio * 32768) * 3, -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(sf.read(out, dtype="int16")[0], expected)
    out.unlink()
    result = cli("--source-file", str(lying), "--destination-file", str(out))
    assert result.returncode == 2
    assert "holds more samples than its header announces (1000)" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lying.flac", "unknown.flac"]


def _peak_rss_mb(command: list[str], env: dict) -> tuple[subprocess.Popen, float]:
    """Run ``command``; return it (finished) and its peak resident memory (VmHWM), MB."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.02)
    return process, peak / 1024


def test_memory_stays_flat_for_a_long_file(tmp_path):
    # 10 minutes of 48 kHz mono int16: 58 MB on disk, 115 MB as float32. The whole-file path
    # peaked at 1 GB; streamed, the CLI holds about a block at a time.
    source = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(source, "w", 48000, 1, subtype="PCM_16") as f:
        minute = (np.random.default_rng(0).standard_normal(48000 * 60) * 3000).astype(np.int16)
        for _ in range(10):
            f.write(minute)
    process, peak = _peak_rss_mb([sys.executable, SCRIPT, "--source-file", str(source),
                                  "--destination-file", str(tmp_path / "out.wav")],
                                 PASSTHROUGH_ENV)
    assert process.returncode == 0, process.stderr.read()
    assert sf.info(tmp_path / "out.wav").frames == 48000 * 600
    assert peak < 250, f"peak RSS {peak:.0f} MB"


# ------------------------------------------------------------------ safety


def _only(tmp_path, *names: str) -> None:
    """Nothing but ``names`` in ``tmp_path``: no output, no temporary file."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_destination_equal_to_source_is_refused_unless_overwrite(tmp_path):
    source = tmp_path / "speech.f32"
    source.write_bytes((SAMPLES / "speech_48000.f32").read_bytes())
    original = source.read_bytes()
    os.link(source, tmp_path / "hard.f32")
    (tmp_path / "soft.f32").symlink_to(source)
    for destination in (source, tmp_path / "hard.f32", tmp_path / "soft.f32",
                        tmp_path / "." / "speech.f32"):
        result = cli("--source-file", str(source), "--destination-file", str(destination))
        assert result.returncode == 2
        assert "--destination-file is the source itself" in result.stderr
        assert "--overwrite" in result.stderr and result.stderr.count("\n") == 1
        assert source.read_bytes() == original
    _only(tmp_path, "speech.f32", "hard.f32", "soft.f32")
    result = cli("--source-file", str(source), "--destination-file", str(source),
                 "--overwrite")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.fromfile(source, "<f4"),
                                  np.frombuffer(original, "<f4") * np.float32(3))
    _only(tmp_path, "speech.f32", "hard.f32", "soft.f32")
    # The same for a folder given as its own destination.
    result = cli("--source-file", str(tmp_path), "--destination-file", str(tmp_path))
    assert result.returncode == 2 and "the source itself" in result.stderr


def test_non_regular_sources_are_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.raw"
    os.mkfifo(fifo)
    for source in (Path("/dev/zero"), fifo):
        started = time.monotonic()
        result = cli("--source-file", str(source), "--destination-file",
                     str(tmp_path / "out.raw"))
        assert time.monotonic() - started < 30  # no reading without end, no blocking
        assert result.returncode == 2
        assert f"{source} is not a regular file" in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    _only(tmp_path, "pipe.raw")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_output_mode_follows_the_umask(tmp_path, umask, mode):
    out = tmp_path / "out.raw"
    result = subprocess.run([sys.executable, SCRIPT, "--source-file",
                             str(SAMPLES / "speech_48000.f32"), "--destination-file", str(out)],
                            cwd=ROOT, env=PASSTHROUGH_ENV, capture_output=True, text=True,
                            timeout=120, umask=umask)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode


@pytest.mark.parametrize("signum, status, word", [(signal.SIGTERM, 143, "terminated"),
                                                  (signal.SIGINT, 130, "interrupted")])
def test_a_signal_mid_write_cleans_up(tmp_path, signum, status, word):
    # 20 minutes at 16 kHz, resampled both ways: long enough to be caught mid-write.
    source = tmp_path / "long.s16"
    (np.random.default_rng(0).standard_normal(16000 * 1200) * 3000).astype("<i2").tofile(source)
    # A shell's background job ignores SIGINT, and children inherit that: undo it.
    process = subprocess.Popen([sys.executable, SCRIPT, "--source-file", str(source),
                                "--destination-file", str(tmp_path / "out.s16"),
                                "--format", "s16le", "--sample-rate", "16000"],
                               cwd=ROOT, env=PASSTHROUGH_ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.s16.*.tmp")) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        workers = workers_of(process.pid)
        assert workers
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == status, stderr
    assert stderr == f"enhance_file.py: {word}\n"
    _only(tmp_path, "long.s16")
    assert wait_until_gone(workers, timeout=10)


def _error_cases(tmp_path):
    """Sources that must each fail with exit 2, one line, and nothing written."""
    nan_late = (np.random.default_rng(1).standard_normal(48000 * 60) * 0.1).astype("<f4")
    nan_late[48000 * 50] = np.nan  # past the first block
    many = audio_bytes(np.zeros((100, 17), np.int16), 48000, "WAV")
    corrupt = bytearray(make_audio("FLAC", "PCM_16", 16000, 1))
    corrupt[8:20] = b"\xff" * 12
    return {
        "missing": (None, "source file not found"),
        "empty.raw": (b"", "the audio is empty"),
        "nan_late.f32": (nan_late.tobytes(), "1 NaN or infinite samples (in the block from"),
        "many.wav": (many, "the audio has 17 channels; the limit is MAX_CHANNELS=16"),
        "corrupt.flac": (bytes(corrupt), "sample rate in the header must be between"),
        "lying.flac": (flac(np.zeros(9600, np.float32), 48000, declared=100),
                       "holds more samples than its header announces (100)"),
        "cut.wav": ((SAMPLES / "speech_48000.wav").read_bytes()[:200_000],
                    "the WAV data is truncated"),
        "a.webm": (b"\x1a\x45\xdf\xa3" + b"\x00" * 100, "WebM/Matroska audio is not supported"),
        "seven_bits.wav": (None, "the WAV header is inconsistent: 7 bits per sample"),
    }


def test_every_error_path_exits_2_with_one_line_and_leaves_nothing(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    for name, (content, message) in _error_cases(tmp_path).items():
        source = inputs / name
        if name == "seven_bits.wav":
            content = wav_with_bits(7)
        if content is not None:
            source.write_bytes(content)
        result = cli("--source-file", str(source), "--destination-file",
                     str(outputs / f"out_{name}"))
        assert result.returncode == 2, (name, result.stderr)
        assert message in result.stderr, (name, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, name
        assert list(outputs.iterdir()) == [], name


# ------------------------------------------------------------------ through a running service


def test_a_file_streamed_through_a_server_equals_the_local_result(tmp_path):
    from tests.helpers import DENOISER, LiveServer

    source = SAMPLES / "noisy_speech_16000.wav"
    here, there = tmp_path / "here.wav", tmp_path / "there.wav"
    local = cli("--source-file", str(source), "--destination-file", str(here),
                "--atten-lim-db", "12", env={**PASSTHROUGH_ENV, "TF_MODEL_PATH": str(DENOISER)})
    assert local.returncode == 0, local.stderr
    with LiveServer() as server:  # serves the passthrough by default, and the denoiser
        remote = cli("--source-file", str(source), "--destination-file", str(there),
                     "--server", server.url, "--model", "denoiser_48k", "--atten-lim-db", "12")
        assert remote.returncode == 0, remote.stderr
        # Samples, not bytes: a float WAV's PEAK chunk holds the time it was written.
        assert same_bits(sf.read(there, dtype="float32")[0], sf.read(here, dtype="float32")[0])
        tripled = tmp_path / "tripled.raw"
        remote = cli("--source-file", str(SAMPLES / "speech_48000.f32"), "--destination-file",
                     str(tripled), "--server", server.url)
        assert remote.returncode == 0, remote.stderr
        source_samples = np.fromfile(SAMPLES / "speech_48000.f32", dtype="<f4")
        np.testing.assert_array_equal(np.fromfile(tripled, "<f4"), source_samples * 3)
        bad = cli("--source-file", str(source), "--destination-file", str(tmp_path / "x.wav"),
                  "--server", server.url, "--model", "nope")
        assert bad.returncode == 2 and "4404" in bad.stderr and "unknown model" in bad.stderr
        assert bad.stderr.count("\n") == 1 and not (tmp_path / "x.wav").exists()
    gone = cli("--source-file", str(source), "--destination-file", str(tmp_path / "y.wav"),
               "--server", server.url)
    assert gone.returncode == 2 and "cannot reach" in gone.stderr, gone.stderr
    assert gone.stderr.count("\n") == 1 and not (tmp_path / "y.wav").exists()


def test_a_strength_limit_out_of_range_exits_2(tmp_path):
    result = cli("--source-file", str(SAMPLES / "speech_16000.f32"), "--destination-file",
                 str(tmp_path / "o.raw"), "--atten-lim-db", "-3")
    assert result.returncode == 2 and "--atten-lim-db must be from 0 to 100 dB" in result.stderr

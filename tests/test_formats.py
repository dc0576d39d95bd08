"""Containers, encodings, rates and channels: what comes in goes back out the same way."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, SAMPLES

from audio_manipulations import AudioFormat, decode_audio, encode_audio, quantize
from errors import InvalidAudio, UnsupportedFormat

FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
           ("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("raw", "f32le"), ("raw", "s16le")]
RATES = [8000, 16000, 22050, 44100, 48000, 96000]
FULL_SCALE = {"PCM_16": 2**15, "PCM_24": 2**23, "PCM_32": 2**31, "s16le": 2**15}


def make_audio(container: str, subtype: str, rate: int, channels: int,
               amplitude: float = 0.05, seconds: float = 0.3) -> bytes:
    """Encode tones with soundfile or numpy directly, independently of the code under test.

    The tones stay below 0.3 × Nyquist, where resampling there and back is transparent.
    """
    t = np.arange(int(rate * seconds))[:, None] / rate
    phases = np.random.default_rng(rate).uniform(0, 2 * np.pi, (3, channels))
    tones = sum(np.sin(2 * np.pi * f * t + phases[i])
                for i, f in enumerate((220.0, 1000.0, 0.15 * rate)))
    samples = (amplitude * tones).astype(np.float32)
    if channels == 1:
        samples = samples[:, 0]
    if container == "raw":
        if subtype == "f32le":
            return samples.astype("<f4").tobytes()
        return np.round(samples * 32768).astype("<i2").tobytes()
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def cases():
    for container, subtype in FORMATS:
        for rate in RATES:
            for channels in (1, 2):
                if container == "raw" and channels == 2:
                    continue  # headerless audio is mono: nothing in it says otherwise
                yield container, subtype, rate, channels


@pytest.mark.parametrize("container, subtype, rate, channels", list(cases()))
def test_round_trip_keeps_format_rate_channels_and_length(pool, container, subtype, rate,
                                                          channels):
    data = make_audio(container, subtype, rate, channels)
    decoded = decode_audio(data, subtype if container == "raw" else "f32le", rate)
    assert decoded.format == AudioFormat(container, subtype)
    assert decoded.sample_rate == rate and decoded.channels == channels
    enhanced = pool.enhance(decoded.samples, rate)
    assert enhanced.shape == decoded.samples.shape and enhanced.dtype == np.float32
    encoded, clipped = encode_audio(enhanced, rate, decoded.format)
    assert clipped == 0  # 3 × noise within ±0.3 stays in range
    if container == "raw":
        assert len(encoded) == len(data)
    else:
        info = sf.info(io.BytesIO(encoded))
        assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
            container, subtype, rate, channels, decoded.samples.shape[0])
    again = decode_audio(encoded, subtype if container == "raw" else "f32le", rate)
    if rate == 48000:  # the model's rate: no resampling, so nothing but the model acts
        if subtype in ("FLOAT", "f32le"):
            np.testing.assert_array_equal(again.samples, decoded.samples * np.float32(3))
        else:
            lsb = 1 / FULL_SCALE[subtype]
            np.testing.assert_allclose(again.samples, decoded.samples * 3, rtol=0,
                                       atol=lsb * (1.01 if subtype != "PCM_32" else 256))
    else:
        core = slice(len(enhanced) // 10, -len(enhanced) // 10)
        error = again.samples[core] - 3 * decoded.samples[core]
        assert np.sqrt(np.mean(error**2)) < 0.05 * np.sqrt(np.mean((3 * decoded.samples) ** 2))


@pytest.mark.parametrize("rate", [8000, 11025, 12345, 22050, 32000, 88200, 176400, 192000])
def test_any_integer_rate_is_resampled_there_and_back(pool, rate):
    audio = (np.random.default_rng(rate).standard_normal(rate // 3) * 0.1).astype(np.float32)
    assert pool.enhance(audio, rate).shape == audio.shape


def test_channels_are_enhanced_separately_and_kept_in_order(pool):
    left = np.linspace(-0.1, 0.1, 30_000, dtype=np.float32)
    stereo = np.stack([left, np.zeros_like(left), -left], axis=1)
    out = pool.enhance(stereo, 48000)
    np.testing.assert_array_equal(out, stereo * np.float32(3))


def test_integer_output_saturates_and_counts_clipped_samples():
    ints, clipped = quantize(np.array([1.5, -1.5, 0.999, -1.0, 0.5], np.float32), 32768)
    assert ints.tolist() == [32767, -32768, 32735, -32768, 16384]
    assert clipped == 2
    encoded, clipped = encode_audio(np.array([2.0, -2.0, 0.25], np.float32), 16000,
                                    AudioFormat("WAV", "PCM_24"))
    assert clipped == 2
    data, _ = sf.read(io.BytesIO(encoded), dtype="int32")
    assert (data >> 8).tolist() == [2**23 - 1, -(2**23), 2**21]


def test_float_output_keeps_values_above_one():
    encoded, clipped = encode_audio(np.array([1.5, -3.0], np.float32), 48000,
                                    AudioFormat("WAV", "FLOAT"))
    assert clipped == 0
    assert sf.read(io.BytesIO(encoded), dtype="float32")[0].tolist() == [1.5, -3.0]


def test_broken_inputs_give_clear_errors():
    wav = (SAMPLES / "speech_stereo_48000.wav").read_bytes()
    with pytest.raises(InvalidAudio, match="the WAV data is truncated: its header announces "
                                           "4954260 bytes of samples, 99956 are present"):
        decode_audio(wav[:100_000])
    flac = bytearray(make_audio("FLAC", "PCM_16", 16000, 1))
    flac[8:20] = b"\xff" * 12
    with pytest.raises(InvalidAudio):
        decode_audio(bytes(flac))
    with pytest.raises(InvalidAudio, match="cannot read the FLAC data"):
        decode_audio(b"fLaC" + b"\x00" * 50)
    with pytest.raises(UnsupportedFormat, match="Ogg audio is not supported; supported formats: "
                                                "WAV"):
        decode_audio(b"OggS" + b"\x00" * 100)
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(100), 8000, format="WAV", subtype="ULAW")
    with pytest.raises(UnsupportedFormat, match="WAV subtype ULAW is not supported"):
        decode_audio(buffer.getvalue())
    with pytest.raises(UnsupportedFormat, match="unknown raw format 's24le'"):
        decode_audio(b"\x00" * 12, "s24le", 48000)
    with pytest.raises(InvalidAudio, match="3 bytes is not a whole number of s16le samples"):
        decode_audio(b"\x00" * 3, "s16le", 48000)


# ------------------------------------------------------------------ the CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "enhance_file.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


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

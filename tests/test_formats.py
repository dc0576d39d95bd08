"""Containers, encodings, rates and channels: what comes in goes back out the same way."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from audio_manipulations import AudioFormat, decode_audio, encode_audio, quantize
from enhancer.errors import InvalidAudio, UnsupportedFormat
from tests.helpers import SAMPLES

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

"""Audio the tests feed in, encoded with soundfile or numpy, independently of the code under
test: the one place tests write audio (``sf.write``), imported by ``tests/`` and ``test_api.py``.

``audio_bytes`` and ``write_audio`` are the encoders; the others build particular inputs:
tones and mixtures in each format, FLACs whose header lies, a FLAC bomb, a WAV with a broken
header. Random speech-level noise is ``tests.helpers.random_audio``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf


def audio_bytes(samples: np.ndarray, rate: int, container: str,
                subtype: str | None = None) -> bytes:
    """``samples`` (``[n]`` or ``[n, channels]``) encoded by soundfile in memory."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def write_audio(path: Path, samples: np.ndarray, rate: int, container: str | None = None,
                subtype: str | None = None) -> Path:
    """``samples`` encoded by soundfile into ``path`` (the container from its suffix unless
    given); returns ``path``."""
    sf.write(path, samples, rate, format=container, subtype=subtype)
    return path


def float_wav(samples: np.ndarray, rate: int) -> bytes:
    """A 32-bit float WAV: exactly ``samples``."""
    return audio_bytes(samples, rate, "WAV", "FLOAT")


def tone(frames: int, channels: int = 1) -> np.ndarray:
    """440 Hz at 48 kHz, channel ``c`` at ``c + 1`` times that; ``[n]`` when mono."""
    t = np.arange(frames)[:, None] / 48000
    out = (0.3 * np.sin(2 * np.pi * 440 * t * np.arange(1, channels + 1))).astype(np.float32)
    return out[:, 0] if channels == 1 else out


def flac(samples: np.ndarray, rate: int, declared: int | None = None) -> bytes:
    """``samples`` as 16-bit FLAC; ``declared`` rewrites STREAMINFO's total (0: unknown)."""
    data = bytearray(audio_bytes(samples, rate, "FLAC", "PCM_16"))
    if declared is not None:
        # "fLaC", the block header, 10 bytes of sizes, then rate/channels/bits and 36 bits
        # of total samples.
        packed = int.from_bytes(data[18:26], "big")
        data[18:26] = ((packed >> 36 << 36) | declared).to_bytes(8, "big")
    return bytes(data)


def flac_bomb() -> bytes:
    """8 channels of silence at 192 kHz for 60 s: 92 million samples in under 100 kB."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", 192000, 8, format="FLAC", subtype="PCM_16") as f:
        second = np.zeros((192000, 8), np.int16)
        for _ in range(60):
            f.write(second)
    return buffer.getvalue()


def make_audio(container: str, subtype: str, rate: int, channels: int,
               amplitude: float = 0.05, seconds: float = 0.3) -> bytes:
    """Three tones in ``container`` (``raw``: headerless ``f32le`` or ``s16le``, mono).

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
    return audio_bytes(samples, rate, container, subtype)


def lossy_audio(container: str, subtype: str, rate: int, channels: int,
                seconds: float = 1.5) -> tuple[bytes, np.ndarray]:
    """A tone encoded by soundfile (MP3, Vorbis, Opus), and the tone."""
    t = np.arange(int(rate * seconds))[:, None] / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t * np.arange(1, channels + 1))).astype(np.float32)
    return audio_bytes(tone, rate, container, subtype), tone


def wav_with_bits(bits: int) -> bytes:
    """A 16-bit PCM WAV whose header then says ``bits`` bits per sample."""
    data = bytearray(make_audio("WAV", "PCM_16", 16000, 1))
    fmt = data.find(b"fmt ")
    data[fmt + 8 + 14:fmt + 8 + 16] = bits.to_bytes(2, "little")
    return bytes(data)

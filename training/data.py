"""Training and test data for the denoiser: espeak-ng speech mixed with a bank of noises.

Everything is generated here, at 48 kHz, from a seed: speech from espeak-ng (Debian package
``espeak-ng``; many voices, rates and pitches) and noises made procedurally (white, pink,
brown, coloured, mains hum with harmonics, amplitude-modulated, babble of other utterances).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfilt

RATE = 48000

# Voices and their variants; the test set uses voices the training set never heard.
TRAIN_VOICES = ["en", "en-us", "en-gb-x-rp", "en-gb-x-gbclan"]
TEST_VOICES = ["en-gb-scotland", "en-029", "en-gb-x-gbcwmd"]
TRAIN_VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+f1", "+f2", "+f3", "+klatt", "+f4"]
TEST_VARIANTS = ["", "+m5", "+f5", "+m6", "+m7"]

_SUBJECTS = ["the old man", "a small child", "my neighbour", "the teacher", "our pilot",
             "the baker", "a tired nurse", "the driver", "her brother", "the farmer",
             "every student", "the engineer", "a quiet girl", "the doctor", "this painter"]
_VERBS = ["carried", "painted", "found", "opened", "measured", "cleaned", "borrowed", "sold",
          "described", "repaired", "counted", "followed", "noticed", "delivered", "ordered"]
_OBJECTS = ["a heavy wooden box", "the yellow kite", "seven silver coins", "the broken clock",
            "a basket of apples", "the morning paper", "two blue chairs", "the garden gate",
            "a long letter", "the kitchen window", "a bag of flour", "the map of the city",
            "fresh bread", "the red bicycle", "a cup of tea"]
_PLACES = ["near the station", "after lunch", "before the storm", "in the old market",
           "beside the river", "at the end of the street", "during the winter",
           "behind the school", "on a sunny day", "under the bridge", "late at night",
           "in the north of the town", "without a word", "at the harbour", "for the festival"]


def sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct sentences; different seeds give (almost surely) different ones."""
    rng = np.random.default_rng(seed)
    out: set[str] = set()
    while len(out) < count:
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS),
                 rng.choice(_PLACES)]
        if rng.random() < 0.5:
            words += ["and", rng.choice(_VERBS), rng.choice(_OBJECTS)]
        out.add(" ".join(words).capitalize() + ".")
    return sorted(out)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's speech of ``text`` at 48 kHz, float32, peak-normalised to 0.5."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", text], capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    audio = resample_poly(audio, RATE // 150, rate // 150).astype(np.float32)  # 22050 → 48000
    return 0.5 * audio / max(float(np.abs(audio).max()), 1e-6)


def speech_set(count: int, seed: int, test: bool = False) -> list[np.ndarray]:
    """``count`` utterances with random voice, variant, rate and pitch."""
    rng = np.random.default_rng(seed)
    voices, variants = (TEST_VOICES, TEST_VARIANTS) if test else (TRAIN_VOICES, TRAIN_VARIANTS)
    texts = sentences(count, seed + (10_000 if test else 0))
    return [speak(text, rng.choice(voices) + rng.choice(variants),
                  int(rng.integers(120, 220)), int(rng.integers(20, 80)))
            for text in texts]


# ----------------------------------------------------------------------------- noise


def _shaped_noise(rng: np.random.Generator, length: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1 / RATE)
    freqs[0] = freqs[1]
    spectrum /= freqs ** (exponent / 2)
    return np.fft.irfft(spectrum, length)


def noise(kind: str, length: int, rng: np.random.Generator,
          babble_pool: list[np.ndarray] | None = None) -> np.ndarray:
    """One noise of ``kind``, unit RMS."""
    t = np.arange(length) / RATE
    if kind == "white":
        x = rng.standard_normal(length)
    elif kind == "pink":
        x = _shaped_noise(rng, length, 1.0)
    elif kind == "brown":
        x = _shaped_noise(rng, length, 2.0)
    elif kind == "coloured":
        low = rng.uniform(50, 4000)
        high = min(low * rng.uniform(1.5, 20), 0.45 * RATE)
        sos = butter(2, [low, high], btype="band", fs=RATE, output="sos")
        x = sosfilt(sos, _shaped_noise(rng, length, rng.uniform(-0.5, 1.5)))
    elif kind == "hum":
        base = rng.choice([50.0, 60.0])
        x = sum(rng.uniform(0.1, 1) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3))
                for k in range(1, int(rng.integers(4, 20))))
        x = x + 0.05 * rng.standard_normal(length)
    elif kind == "modulated":
        carrier = _shaped_noise(rng, length, rng.uniform(0, 1.5))
        carrier /= np.std(carrier) + 1e-9
        x = carrier * (1 + 0.9 * np.sin(2 * np.pi * rng.uniform(0.5, 8) * t))
    elif kind == "babble":
        pool = babble_pool or []
        x = np.zeros(length)
        for _ in range(int(rng.integers(3, 7))):
            talker = pool[int(rng.integers(len(pool)))]
            start = int(rng.integers(-length // 2, length // 2))
            piece = np.resize(talker, length)  # repeats to cover the length
            x += np.roll(piece, start)
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    x = np.asarray(x, dtype=np.float64)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


NOISE_KINDS = ("white", "pink", "brown", "coloured", "hum", "modulated", "babble")


def lowpass(audio: np.ndarray, cutoff: float) -> np.ndarray:
    sos = butter(8, cutoff, btype="low", fs=RATE, output="sos")
    return sosfilt(sos, audio).astype(np.float32)


@dataclass
class Mixture:
    noisy: np.ndarray
    clean: np.ndarray
    kind: str
    snr_db: float


def mix(speech: np.ndarray, rng: np.random.Generator, snr_db: float, kind: str,
        babble_pool: list[np.ndarray], level_db: float, cutoff: float | None) -> Mixture:
    """Speech plus noise at ``snr_db``, scaled to ``level_db`` dBFS RMS, maybe low-passed."""
    pad = int(rng.integers(0, RATE // 2))
    clean = np.concatenate([np.zeros(pad, np.float32), speech,
                            np.zeros(int(rng.integers(0, RATE // 2)), np.float32)])
    n = noise(kind, clean.shape[0], rng, babble_pool)
    speech_rms = np.sqrt(np.mean(speech.astype(np.float64) ** 2))
    noisy = clean + n * speech_rms / 10 ** (snr_db / 20)
    gain = 10 ** (level_db / 20) / (np.sqrt(np.mean(noisy.astype(np.float64) ** 2)) + 1e-12)
    noisy, clean = noisy * gain, clean * gain
    if cutoff is not None:
        noisy, clean = lowpass(noisy, cutoff), lowpass(clean, cutoff)
    return Mixture(noisy.astype(np.float32), clean.astype(np.float32), kind, snr_db)

"""Noisy/clean pairs from real and synthetic speech and noise, each with its bandwidth.

A *piece* is a few seconds of clean speech: one espeak-ng sentence, or real clips of one
language or speaker joined with short pauses. Its bandwidth is the narrowest of its clips', so
the loss never asks the model to delete (or invent) what a band-limited recording lacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import next_fast_len

from training import data
from training.real_data import RATE, Clip

STATIONARY = ("white", "pink", "brown", "coloured", "hum", "modulated")
KINDS = (*STATIONARY, "babble", "music", "events", "stationary+events")


@dataclass
class Piece:
    audio: np.ndarray
    bandwidth: float


@dataclass
class Pair:
    noisy: np.ndarray
    clean: np.ndarray
    bandwidth: float
    kind: str
    snr_db: float


def pieces_from_clips(clips: list[Clip], seconds: float, rng: np.random.Generator,
                      count: int) -> list[Piece]:
    """``count`` pieces of about ``seconds``, each from clips of one group."""
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(clip.group, []).append(clip)
    names = sorted(groups)
    out = []
    for _ in range(count):
        group = groups[names[int(rng.integers(len(names)))]]
        parts, bandwidth, length = [], float("inf"), 0
        while length < seconds * RATE:
            clip = group[int(rng.integers(len(group)))]
            gap = np.zeros(int(rng.uniform(0.05, 0.6) * RATE), np.float32)
            parts += [gap, clip.audio]
            bandwidth = min(bandwidth, clip.bandwidth)
            length += gap.shape[0] + clip.audio.shape[0]
        audio = np.concatenate(parts)
        out.append(Piece(0.5 * audio / max(float(np.abs(audio).max()), 1e-6), bandwidth))
    return out


def _events(length: int, rng: np.random.Generator, recorded: list[np.ndarray]) -> np.ndarray:
    """Sparse non-stationary sounds: recorded event sounds and synthetic knocks and clicks."""
    x = np.zeros(length)
    for _ in range(int(rng.integers(2, 8))):
        at = int(rng.integers(length))
        if recorded and rng.random() < 0.6:
            sound = recorded[int(rng.integers(len(recorded)))]
            sound = sound[:min(sound.shape[0], length - at)]
        else:
            n = min(int(rng.uniform(0.005, 0.3) * RATE), length - at)
            burst = data.noise("coloured", max(n, 16), rng)[:n]
            sound = burst * np.exp(-np.arange(n) / (rng.uniform(0.002, 0.08) * RATE))
        x[at:at + sound.shape[0]] += sound * rng.uniform(0.3, 3)
    return x


def _music(length: int, rng: np.random.Generator, recorded: list[np.ndarray]) -> np.ndarray:
    track = recorded[int(rng.integers(len(recorded)))]
    start = int(rng.integers(max(1, track.shape[0] - length)))
    return np.resize(track[start:start + length], length)


def noise(kind: str, length: int, rng: np.random.Generator, talkers: list[np.ndarray],
          recorded: list[np.ndarray], events: list[np.ndarray]) -> np.ndarray:
    """One noise of ``kind`` with unit RMS."""
    if kind in STATIONARY:  # FFT-made: a length with small factors is 10x faster
        x = data.noise(kind, next_fast_len(length, real=True), rng)[:length]
    elif kind == "babble":
        x = data.noise("babble", length, rng, talkers)
    elif kind == "music" and recorded:
        x = _music(length, rng, recorded)
    elif kind in ("events", "music"):  # (music without recordings: events instead)
        x = _events(length, rng, events)
    else:  # a steady noise under sparse events
        steady = noise(STATIONARY[int(rng.integers(len(STATIONARY)))], length, rng, talkers,
                       recorded, events)
        x = steady * rng.uniform(0.1, 0.5) + _events(length, rng, events)
    x = np.asarray(x, np.float64)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def mix(piece: Piece, noise_audio: np.ndarray, snr_db: float, level_db: float,
        cutoff: float | None, kind: str) -> Pair:
    """Speech plus noise at ``snr_db`` (of the speech's active RMS), scaled to ``level_db``."""
    clean = piece.audio.astype(np.float64)
    active = clean[np.abs(clean) > 1e-3 * np.abs(clean).max()]
    speech_rms = np.sqrt(np.mean(active ** 2)) if active.size else 0.0
    noisy = clean + noise_audio * speech_rms / 10 ** (snr_db / 20)
    gain = 10 ** (level_db / 20) / (np.sqrt(np.mean(noisy ** 2)) + 1e-12)
    noisy, clean = (noisy * gain).astype(np.float32), (clean * gain).astype(np.float32)
    bandwidth = piece.bandwidth
    if cutoff is not None:
        noisy, clean = data.lowpass(noisy, cutoff), data.lowpass(clean, cutoff)
        bandwidth = min(bandwidth, cutoff)
    return Pair(noisy, clean, bandwidth, kind, snr_db)


def training_pairs(pieces: list[Piece], count: int, rng: np.random.Generator,
                   talkers: list[np.ndarray], recorded: list[np.ndarray],
                   events: list[np.ndarray]) -> list[Pair]:
    """The recipe: SNR −5 to 20 dB (15 % clean), level −45 to −15 dBFS, a quarter
    low-passed at 3.8–20 kHz, 3 % digital silence."""
    out = []
    for _ in range(count):
        piece = pieces[int(rng.integers(len(pieces)))]
        kind = KINDS[int(rng.integers(len(KINDS)))]
        snr = 60.0 if rng.random() < 0.15 else float(rng.uniform(-5, 20))
        cutoff = float(rng.uniform(3800, 20000)) if rng.random() < 0.25 else None
        n = noise(kind, piece.audio.shape[0], rng, talkers, recorded, events)
        pair = mix(piece, n, snr, float(rng.uniform(-45, -15)), cutoff, kind)
        if rng.random() < 0.03:
            pair = Pair(np.zeros_like(pair.noisy), np.zeros_like(pair.clean), RATE / 2,
                        "silence", 0.0)
        out.append(pair)
    return out

"""Quality measures shared by training, tests and benchmarks (numpy only)."""

from __future__ import annotations

import itertools

import numpy as np


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio of ``estimate`` against ``reference``, dB."""
    reference = reference.astype(np.float64)
    estimate = estimate.astype(np.float64)
    scale = np.dot(estimate, reference) / (np.dot(reference, reference) + 1e-12)
    target = scale * reference
    return float(10 * np.log10(np.sum(target**2) / (np.sum((estimate - target) ** 2) + 1e-12)
                               + 1e-12))


# Bands of the full-band check: clean speech through the denoiser keeps each within 1 dB.
BAND_EDGES_HZ = (0, 2000, 4000, 8000, 11000, 16000, 20000)


def band_change_db(processed: np.ndarray, reference: np.ndarray, rate: int,
                   edges: tuple[int, ...] = BAND_EDGES_HZ) -> dict[str, float]:
    """Energy change (dB) of ``processed`` against ``reference`` in each band of ``edges``.

    Both must be aligned and of equal length; energies are summed over Hann-windowed
    4096-sample frames.
    """
    def power(x: np.ndarray) -> np.ndarray:
        frames = x[: x.shape[0] // 4096 * 4096].astype(np.float64).reshape(-1, 4096)
        return (np.abs(np.fft.rfft(frames * np.hanning(4096), axis=1)) ** 2).sum(axis=0)

    freqs = np.fft.rfftfreq(4096, 1 / rate)
    before, after = power(reference), power(processed)
    out = {}
    for lo, hi in itertools.pairwise(edges):
        band = (lo <= freqs) & (freqs < hi)
        out[f"{lo / 1000:g}-{hi / 1000:g} kHz"] = float(
            10 * np.log10((after[band].sum() + 1e-30) / (before[band].sum() + 1e-30)))
    return out

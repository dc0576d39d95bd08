"""Quality measures shared by training, tests and benchmarks (numpy only)."""

from __future__ import annotations

import numpy as np


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio of ``estimate`` against ``reference``, dB."""
    reference = reference.astype(np.float64)
    estimate = estimate.astype(np.float64)
    scale = np.dot(estimate, reference) / (np.dot(reference, reference) + 1e-12)
    target = scale * reference
    return float(10 * np.log10(np.sum(target**2) / (np.sum((estimate - target) ** 2) + 1e-12)
                               + 1e-12))

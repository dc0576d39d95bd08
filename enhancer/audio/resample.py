"""Resampling with libsoxr: whole arrays here, chunk by chunk in streams, the same samples."""

from __future__ import annotations

import numpy as np

from enhancer.audio.formats import check_sample_rate, check_samples


def convert_to_required_format(raw_data: np.ndarray, desired_sample_rate: int,
                               original_sample_rate: int) -> np.ndarray:
    """Resample audio from ``original_sample_rate`` to ``desired_sample_rate``.

    Uses libsoxr (``soxr.resample``, its default high quality), in float32; the output has
    exactly ``ceil(n * desired / original)`` samples (soxr's own count, zero-padded by at
    most one sample at the end). A stream resampled chunk by chunk with
    ``soxr.ResampleStream`` and padded the same way at its end gives the very same samples,
    which is what keeps streamed and whole-file output identical (see
    :func:`resampled_length`).

    Parameters
    ----------
    raw_data : ndarray
        Float samples, ``[n]`` or ``[n, channels]``.
    desired_sample_rate, original_sample_rate : int
        Rates in Hz, ``MIN_SAMPLE_RATE`` to ``MAX_SAMPLE_RATE``.

    Returns
    -------
    ndarray
        ``raw_data`` itself when the rates match, else a new float32 array.
    """
    raw_data = check_samples(raw_data)
    desired = check_sample_rate(desired_sample_rate, "desired_sample_rate")
    original = check_sample_rate(original_sample_rate, "original_sample_rate")
    if desired == original:
        return raw_data
    length = resampled_length(raw_data.shape[0], desired, original)
    if raw_data.shape[0] == 0:
        return np.zeros((0, *raw_data.shape[1:]), dtype=np.float32)
    import soxr

    resampled = soxr.resample(np.ascontiguousarray(raw_data, dtype=np.float32), original,
                              desired)
    return fit_length(resampled, length)


def resampled_length(num_samples: int, desired_sample_rate: int,
                     original_sample_rate: int) -> int:
    """How many samples :func:`convert_to_required_format` returns for ``num_samples``."""
    return -(-num_samples * desired_sample_rate // original_sample_rate)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``samples`` along axis 0 to exactly ``length``."""
    if samples.shape[0] >= length:
        return samples[:length]
    pad = [(0, length - samples.shape[0])] + [(0, 0)] * (samples.ndim - 1)
    return np.pad(samples, pad)

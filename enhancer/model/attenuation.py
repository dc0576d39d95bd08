"""``atten_lim_db``: how much of the noisy input is mixed back in, with DeepFilterNet's meaning."""

from __future__ import annotations

import numpy as np

from enhancer.errors import InvalidAudio

MAX_ATTEN_LIM_DB = 100.0


def attenuation_floor(atten_lim_db: float | None) -> float | None:
    """The gain floor for ``atten_lim_db`` dB (``None``: no limit); checks the value."""
    if atten_lim_db is None:
        return None
    if isinstance(atten_lim_db, bool) or not isinstance(atten_lim_db, int | float) or not (
            0 <= atten_lim_db <= MAX_ATTEN_LIM_DB):
        raise InvalidAudio(f"atten_lim_db must be a number of dB from 0 to "
                           f"{MAX_ATTEN_LIM_DB:g}, got {atten_lim_db!r}")
    return float(10 ** (-atten_lim_db / 20))


def limit_attenuation(original: np.ndarray, enhanced: np.ndarray,
                      floor: float | None) -> np.ndarray:
    """Mix ``floor`` of the original back in, as DeepFilterNet's ``atten_lim_db`` does.

    For a model whose effect is a gain between 0 and 1 per frequency (a mask), the result's
    gain is then never below ``floor``: where the model removes everything, exactly
    ``atten_lim_db`` of attenuation is left; where it keeps everything, nothing changes.
    """
    if floor is None:
        return enhanced
    mixed = np.float32(floor) * original.astype(np.float32, copy=False)
    mixed += np.float32(1 - floor) * enhanced
    return mixed

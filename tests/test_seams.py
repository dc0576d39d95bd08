"""No seams: a long file cut into pieces for the pool sounds as the file run in one piece."""

from __future__ import annotations

import numpy as np
import pytest

from bench.seams import DENOISER, DFN3, boundaries, measure, one_piece
from tools.dfn3_check import noisy_speech


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    return noisy_speech()  # 33 s of noisy real speech


@pytest.mark.parametrize("model", [DENOISER, DFN3], ids=["denoiser", "deepfilternet3"])
def test_the_pool_has_no_seams_at_its_pieces_boundaries(noisy, model):
    """Default settings: the file is cut into pieces (six boundaries in 33 s) over two
    workers; around every boundary (and everywhere else) the output is the one-piece run's,
    well within the bar of 1 dB and 20 dB SI-SDR: bit for bit."""
    reference = one_piece(model, noisy)
    seams = measure(model, noisy, reference)
    assert seams.boundaries >= 5 and seams.windows >= 5
    assert seams.passes
    assert seams.level_db == 0 and np.isinf(seams.whole_si_sdr_db)


def test_the_seam_measure_sees_a_seam():
    """What the benchmark measures: 2 dB more gain and some noise over one boundary's window
    show as a level difference of a little more than 2 dB and an SI-SDR of about 16 dB
    there, and miss the bar."""
    from bench.seams import WINDOW, compare

    rng = np.random.default_rng(3)
    reference = (rng.standard_normal(48000 * 3) * 0.1).astype(np.float32)
    cut = 48000
    pooled = reference.copy()
    pooled[cut:cut + WINDOW] *= np.float32(10 ** (2 / 20))
    pooled[cut:cut + WINDOW] += rng.standard_normal(WINDOW).astype(np.float32) * 0.02
    seams = compare("test", pooled, reference, [cut])
    assert seams.windows == 2 and 2.0 < seams.level_db < 2.3
    assert 10 < seams.si_sdr_db < 20 and not seams.passes
    assert boundaries(DENOISER, 48000 * 33, 512) == [(512 * k - 1) * 512 for k in range(1, 7)]

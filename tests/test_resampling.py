"""convert_to_required_format: rates, lengths, levels and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from enhancer.audio.resample import convert_to_required_format


def sine(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def level_db(x: np.ndarray) -> float:
    return 20 * math.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("original, desired", [
    (16000, 48000), (48000, 16000), (44100, 48000), (48000, 44100)])
def test_sine_keeps_frequency_and_level(original, desired):
    x = sine(1000, original)
    y = convert_to_required_format(x, desired, original)
    assert y.dtype == np.float32
    assert len(y) == math.ceil(len(x) * desired / original)
    # Skip the filter's edges, where the signal starts and stops.
    core = y[len(y) // 10: -len(y) // 10]
    assert abs(level_db(core) - level_db(x)) < 0.1
    assert abs(peak_frequency(core, desired) - 1000) < 2


@pytest.mark.parametrize("original, desired", [(16000, 48000), (44100, 48000)])
def test_there_and_back_keeps_level(original, desired):
    x = sine(1000, original)
    back = convert_to_required_format(convert_to_required_format(x, desired, original),
                                      original, desired)
    core = slice(len(x) // 10, -len(x) // 10)
    assert abs(level_db(back[core]) - level_db(x[core])) < 0.1


@pytest.mark.parametrize("length", [1, 7, 1009, 100_003])
@pytest.mark.parametrize("original, desired", [(44100, 48000), (48000, 16000), (8000, 192000)])
def test_length_is_ceil_of_ratio(length, original, desired):
    y = convert_to_required_format(np.zeros(length, np.float32), desired, original)
    assert len(y) == math.ceil(length * desired / original)


def test_same_rate_returns_input_unchanged():
    x = sine(440, 48000)
    assert convert_to_required_format(x, 48000, 48000) is x


def test_channels_are_resampled_independently():
    stereo = np.stack([sine(1000, 16000), np.zeros(16000, np.float32)], axis=1)
    y = convert_to_required_format(stereo, 48000, 16000)
    assert y.shape == (48000, 2)
    assert np.all(y[:, 1] == 0)
    np.testing.assert_array_equal(y[:, 0], convert_to_required_format(stereo[:, 0], 48000, 16000))


@pytest.mark.parametrize("args, error, message", [
    (([0.0], 48000, 16000), TypeError, "raw_data must be a numpy array"),
    ((np.zeros(3, np.int16), 48000, 16000), TypeError, "raw_data must hold floats"),
    ((np.zeros((2, 2, 2), np.float32), 48000, 16000), ValueError, "raw_data must be 1-D"),
    ((np.array([np.nan], np.float32), 48000, 16000), ValueError, "raw_data holds 1 NaN"),
    ((np.zeros(3, np.float32), 48000.0, 16000), TypeError, "desired_sample_rate must be an int"),
    ((np.zeros(3, np.float32), 48000, "16000"), TypeError, "original_sample_rate must be an int"),
    ((np.zeros(3, np.float32), 0, 16000), ValueError, "desired_sample_rate must be between"),
    ((np.zeros(3, np.float32), 48000, -16000), ValueError, "original_sample_rate must be betw"),
    ((np.zeros(3, np.float32), True, 16000), TypeError, "desired_sample_rate"),
])
def test_bad_arguments_are_named(args, error, message):
    with pytest.raises(error, match=message):
        convert_to_required_format(*args)

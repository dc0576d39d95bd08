"""The per-request budget: refused from the header before decoding, and lengths that lie."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from enhancer.audio.decode import AudioReader, decode_audio, probe_audio
from enhancer.audio.formats import AudioFormat, AudioInfo, Budget
from enhancer.errors import InvalidAudio, TooLarge
from service.settings import Settings, SettingsError, load_settings
from tests.audio_builders import audio_bytes, flac, flac_bomb, tone


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any sample is decoded."""
    def refuse(self, out):
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(AudioReader, "readinto", refuse)


def info(frames: int | None, channels: int = 1, rate: int = 48000) -> AudioInfo:
    return AudioInfo(AudioFormat("WAV", "PCM_16"), rate, channels, frames)


def test_each_limit_names_itself_and_its_setting():
    budget = Budget(max_seconds=3600, max_channels=16, max_samples=86_400_000)
    budget.check(info(48000 * 1800))
    with pytest.raises(TooLarge, match=r"^the audio is 7200 s long; the limit is "
                                       r"MAX_AUDIO_SECONDS=3600$"):
        budget.check(info(48000 * 7200))
    with pytest.raises(TooLarge, match=r"^the audio has 1024 channels; the limit is "
                                       r"MAX_CHANNELS=16$"):
        budget.check(info(1, channels=1024))
    # 20 min of stereo: within the seconds, over the samples.
    with pytest.raises(TooLarge, match=r"^the audio decodes to 115200000 samples \(1200 s × 2 "
                                       r"channel\(s\) at 48000 Hz\); the limit is "
                                       r"MAX_DECODED_SAMPLES=86400000$"):
        budget.check(info(48000 * 1200, channels=2))
    # Unknown lengths pass the header check; they are held to frame_limit while decoding.
    budget.check(info(None, channels=2))
    assert budget.frame_limit(info(None, channels=2)) == 43_200_000
    assert Budget().frame_limit(info(None)) is None
    with pytest.raises(ValueError, match="max_channels must be a positive number"):
        Budget(max_channels=0)


def test_decoded_samples_are_counted_at_the_model_rate_when_it_is_higher():
    budget = Budget(max_samples=48000 * 10)
    eight_k = info(8000 * 9, rate=8000)  # 9 s: 72,000 samples, 432,000 at 48 kHz
    budget.check(eight_k)
    budget.check(eight_k, model_rate=48000)
    with pytest.raises(TooLarge, match=r"decodes to 528000 samples .* at 48000 Hz"):
        budget.check(info(8000 * 11, rate=8000), model_rate=48000)
    assert budget.frame_limit(eight_k, model_rate=48000) == 80000
    # A model slower than the audio does not shrink the count.
    budget.check(info(48000 * 10), model_rate=16000)


def test_settings_build_the_budget_and_refuse_bad_values(monkeypatch):
    for name in ("MAX_AUDIO_SECONDS", "MAX_CHANNELS", "MAX_DECODED_SAMPLES"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.budget == Budget(max_seconds=3600, max_channels=16, max_samples=86_400_000)
    for name in ("MAX_AUDIO_SECONDS", "MAX_CHANNELS", "MAX_DECODED_SAMPLES"):
        assert Settings.model_fields[name].description
    monkeypatch.setenv("MAX_CHANNELS", "4")
    monkeypatch.setenv("MAX_AUDIO_SECONDS", "0.5")
    assert load_settings().budget == Budget(max_seconds=0.5, max_channels=4,
                                            max_samples=86_400_000)
    for name, value in (("MAX_CHANNELS", "0"), ("MAX_AUDIO_SECONDS", "inf"),
                        ("MAX_AUDIO_SECONDS", "-1"), ("MAX_DECODED_SAMPLES", "lots")):
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=name):
            load_settings()
        monkeypatch.delenv(name)


@pytest.mark.parametrize("budget, message", [
    (Budget(3600, 16, 86_400_000), r"decodes to 92160000 samples .* MAX_DECODED_SAMPLES"),
    (Budget(max_channels=4), "has 8 channels; the limit is MAX_CHANNELS=4"),
    (Budget(max_seconds=10), "is 60 s long; the limit is MAX_AUDIO_SECONDS=10"),
])
def test_a_flac_bomb_is_refused_by_its_header(no_decoding, budget, message):
    bomb = flac_bomb()
    assert len(bomb) < 100_000  # 368 MB of float32 once decoded
    with pytest.raises(TooLarge, match=message):
        decode_audio(bomb, budget=budget, model_rate=48000)


def test_a_flac_declaring_2_to_the_36_samples_is_too_large_never_a_memory_error():
    data = flac(tone(4800), 48000, declared=2**36 - 1)
    with pytest.raises(TooLarge, match="MAX_AUDIO_SECONDS"):
        decode_audio(data, budget=Budget(3600, 16, 86_400_000), model_rate=48000)
    # Without a budget the header is not trusted with memory either: what the file holds
    # is decoded, and the lie is reported.
    with pytest.raises(InvalidAudio, match="the FLAC data is truncated: its header announces "
                                           "68719476735 samples, 4800 could be read"):
        decode_audio(data)


def test_a_flac_holding_more_than_it_declares_is_refused_not_truncated():
    data = flac(tone(96000), 48000, declared=1000)
    for budget in (None, Budget(3600, 16, 86_400_000)):
        with pytest.raises(InvalidAudio, match=r"the FLAC data holds more samples than its "
                                               r"header announces \(1000\)"):
            decode_audio(data, budget=budget, model_rate=48000)
    with pytest.raises(InvalidAudio, match="truncated: its header announces 96001 samples, "
                                           "96000 could be read"):
        decode_audio(flac(tone(96000), 48000, declared=96001))


def test_a_flac_of_unknown_length_is_decoded_whole():
    samples = tone(100_000, channels=2)
    known = decode_audio(flac(samples, 48000))
    data = flac(samples, 48000, declared=0)
    assert probe_audio(data).frames is None
    unknown = decode_audio(data, budget=Budget(3600, 16, 86_400_000), model_rate=48000)
    np.testing.assert_array_equal(unknown.samples, known.samples)
    assert unknown.samples.shape == (100_000, 2)


def test_a_flac_of_unknown_length_stops_at_the_budget():
    data = flac(tone(100_000), 48000, declared=0)
    with pytest.raises(TooLarge, match="the audio is more than 1 s long; the limit is "
                                       "MAX_AUDIO_SECONDS=1"):
        decode_audio(data, budget=Budget(max_seconds=1))
    with pytest.raises(TooLarge, match=r"decodes to more than 50001 samples .*"
                                       r"MAX_DECODED_SAMPLES=50000"):
        decode_audio(data, budget=Budget(max_samples=50_000))


def test_100_mb_of_8k_s16le_is_refused_before_reading(no_decoding):
    data = bytes(100 * 1024 * 1024)
    with pytest.raises(TooLarge, match=r"the audio is 6553\.6 s long; the limit is "
                                       r"MAX_AUDIO_SECONDS=3600"):
        decode_audio(data, "s16le", 8000, budget=Budget(3600, 16, 86_400_000),
                     model_rate=48000)


def test_a_1024_channel_wav_is_refused(no_decoding):
    wide = audio_bytes(np.zeros((2, 1024), np.int16), 48000, "WAV", "PCM_16")
    with pytest.raises(TooLarge, match="the audio has 1024 channels; the limit is "
                                       "MAX_CHANNELS=16"):
        decode_audio(wide, budget=Budget(3600, 16, 86_400_000))


@pytest.mark.parametrize("declared", [None, 0], ids=["known length", "unknown length"])
def test_decoding_takes_about_the_decoded_size_in_float32(declared):
    samples = tone(48000 * 30, channels=2)  # 11.5 MB as float32
    data = flac(samples, 48000, declared)
    tracemalloc.start()
    try:
        decoded = decode_audio(data, budget=Budget(3600, 16, 86_400_000), model_rate=48000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.samples.dtype == np.float32
    size = decoded.samples.nbytes
    # A known length is read straight into its array; an unknown one grows it by half.
    assert peak < size * (1.05 if declared is None else 1.55) + 1_000_000, (peak, size)

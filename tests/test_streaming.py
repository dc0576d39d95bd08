"""Files enhanced in blocks (as the CLI does) equal the whole file enhanced at once, bit for bit."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from enhancer import AudioEnhancer
from enhancer.apps.enhance_files import BLOCK_MODEL_SAMPLES, block_frames, enhance_blocks
from enhancer.audio.decode import open_audio
from enhancer.errors import InvalidAudio
from tests.audio_builders import flac, float_wav
from tests.helpers import DENOISER, same_bits


@pytest.fixture(scope="module")
def denoiser() -> AudioEnhancer:
    with AudioEnhancer(DENOISER, num_processes=0) as enhancer:
        yield enhancer


def noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((frames, channels)) * 0.1).astype(
        np.float32)


def in_blocks(enhancer: AudioEnhancer, data: bytes, block_model_samples: int) -> np.ndarray:
    """What the CLI writes for ``data``: ``[n]`` for mono, else ``[n, channels]``."""
    with open_audio(io.BytesIO(data)) as reader:
        frames = block_frames(enhancer, reader.info.sample_rate, reader.info.channels,
                              block_model_samples)
        blocks = list(enhance_blocks(enhancer, reader, frames))
    assert len(blocks) > 3  # the test is about block edges
    out = np.concatenate(blocks)
    return out[:, 0] if out.shape[1] == 1 else out


@pytest.mark.parametrize("rate", [48000, 44100, 16000, 8000, 22050, 96000, 12345])
@pytest.mark.parametrize("channels", [1, 2])
def test_blocks_equal_the_whole_file_through_the_denoiser(denoiser, rate, channels):
    # The denoiser frames with hop 512 and overlap-adds sqrt-Hann windows; the rates around
    # 48 kHz are resampled there and back. Small blocks, so there are many edges; 8 s, so
    # whole 192-frame cells of the recurrent model come out of several of them.
    audio = noise(rate * 8 + 777, channels, seed=rate)
    whole = denoiser.enhance(audio[:, 0] if channels == 1 else audio, rate)
    blocks = in_blocks(denoiser, float_wav(audio, rate), block_model_samples=1 << 15)
    assert same_bits(blocks, whole)


def test_blocks_equal_the_whole_file_through_the_pool(pool):
    # The ×3 passthrough on two workers, at the model's rate: exactly three times the input.
    audio = noise(48000 * 5 + 5, 1)[:, 0]
    blocks = in_blocks(pool, float_wav(audio, 48000), block_model_samples=1 << 16)
    assert same_bits(blocks, audio * np.float32(3))
    stereo = noise(44100 * 3, 2)
    assert same_bits(in_blocks(pool, float_wav(stereo, 44100), 1 << 16),
                     pool.enhance(stereo, 44100))


def test_a_flac_of_unknown_length_is_streamed_whole(denoiser):
    audio = (noise(48000 * 8, 1)[:, 0] * 2).clip(-0.9, 0.9)
    decoded = sf.read(io.BytesIO(flac(audio, 48000)), dtype="float32")[0]
    blocks = in_blocks(denoiser, flac(audio, 48000, declared=0), 1 << 15)
    assert same_bits(blocks, denoiser.enhance(decoded, 48000))


@pytest.mark.parametrize("rate", [8000, 44100, 48000, 192000])
@pytest.mark.parametrize("channels", [1, 2, 16])
def test_blocks_hold_a_fixed_amount_at_the_model_rate(denoiser, rate, channels):
    frames = block_frames(denoiser, rate, channels)
    at_model_rate = frames * channels * max(rate, denoiser.model_sample_rate) / rate
    assert BLOCK_MODEL_SAMPLES * 0.99 < at_model_rate <= BLOCK_MODEL_SAMPLES


def test_nan_in_a_later_block_is_refused_with_its_time(denoiser):
    audio = noise(48000 * 4, 1)
    audio[48000 * 3, 0] = np.nan
    with open_audio(io.BytesIO(float_wav(audio, 48000))) as reader:
        blocks = enhance_blocks(denoiser, reader, 48000)
        next(blocks)  # the first block is fine
        with pytest.raises(InvalidAudio, match=r"the audio holds 1 NaN or infinite samples "
                                               r"\(in the block from 3\.0 s\)"):
            list(blocks)


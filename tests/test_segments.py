"""Segments: however frames are cut into segments, the result equals Framing.join's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from enhancer.model.framing import Framing
from enhancer.model.grid import ChannelJob, input_length, result_length, run_segment
from tests.helpers import random_audio, same_bits


def model(frames: np.ndarray) -> np.ndarray:
    """Stands in for a network: nonlinear, frame by frame."""
    return (np.tanh(frames * np.float32(2)) + frames * frames).astype(np.float32)


def reference(framing: Framing, audio: np.ndarray) -> np.ndarray:
    frames = framing.split(audio)
    processed = model(frames.block(0, frames.num_frames)) if frames.num_frames else (
        np.zeros((0, framing.frame_length), np.float32))
    if not framing.overlapping and frames.num_frames:
        processed = np.concatenate([model(frames.block(i, 1)) for i in range(
            frames.num_frames)])
    return framing.join(processed, audio.shape[0])


def segmented(framing: Framing, audio: np.ndarray, cuts: list[int]) -> np.ndarray:
    job = ChannelJob.offline(framing, audio)
    bounds = [0, *[c for c in cuts if 0 < c < job.num_frames], job.num_frames]
    scratch_in = np.empty(input_length(framing, job.num_frames + 1), np.float32)
    for first, stop in itertools.pairwise(bounds):
        count = stop - first
        if count == 0:
            continue
        job.input_for(first, count, scratch_in)
        out = np.empty(result_length(framing, count), np.float32)
        run_segment(model, framing, scratch_in, count, out)
        job.store(first, count, out)
    return job.finish(audio.shape[0])


@pytest.mark.parametrize("frame, hop, window", [(1024, 1024, "none"), (64, 32, "sqrt-hann"),
                                                (64, 16, "sqrt-hann"), (48, 16, "sqrt-hann")])
@pytest.mark.parametrize("length", [1, 15, 16, 17, 100, 1000])
def test_any_segmentation_gives_the_whole_files_result(frame, hop, window, length):
    framing = Framing(frame, hop, window)
    audio = random_audio(length, seed=length)
    expected = reference(framing, audio)
    rng = np.random.default_rng(length + frame + hop)
    frames = framing.frame_count(length)
    for trial in range(5):
        cuts = sorted(rng.choice(np.arange(1, frames), size=min(trial * 2, frames - 1),
                                 replace=False).tolist()) if frames > 1 else []
        assert same_bits(segmented(framing, audio, cuts), expected), cuts
    assert same_bits(segmented(framing, audio, list(range(1, frames))), expected)  # 1 each


@pytest.mark.parametrize("max_count", [1, 100, 192, 500, 1000])
def test_on_a_grid_a_files_segments_are_whole_cells_from_its_start(max_count):
    """A recurrent model's cells start every 192 frames: every segment of a file starts on
    that grid and holds whole cells (at least one) but for the channel's last; a stream
    chunk run by the stream step is one segment as it comes."""
    from enhancer.model.grid import Job

    framing = Framing(1024, 512, "sqrt-hann", context=63, grid=192)
    channels = [ChannelJob.offline(framing, random_audio(n, seed=n)) for n in (48000, 200_000)]
    job = Job(channels)
    cells = max(1, max_count // 192) * 192
    first, cuts = 0, []
    while first < job.num_frames:
        channel, local, count = job.locate(first, max_count)
        cuts.append((channels.index(channel), local, count))
        first += count
    for index, channel in enumerate(channels):
        mine = [(local, count) for i, local, count in cuts if i == index]
        assert [local for local, _ in mine] == list(range(0, channel.num_frames, cells))
        assert sum(count for _, count in mine) == channel.num_frames
    chunk = ChannelJob(framing, random_audio(40 * 512, seed=1), 30, offset=-63 * 512,
                       state=np.zeros(8, np.float32))
    assert Job([chunk]).locate(0, max_count)[2] == 30  # its state goes through it whole


@pytest.mark.parametrize("frames, max_frames, expected", [
    (5625, 768, 768),  # a minute at 48 kHz: 8 segments of 4 cells, 4 a worker
    (5625, 500, 384),  # at most 500: 2 cells
    (300, 768, 192),  # less than two cells: one cell a segment
    (100_000, 768, 768),
])
def test_on_a_grid_a_requests_segments_are_whole_cells_spread_over_the_workers(
        frames, max_frames, expected):
    from enhancer.model.grid import Job, segment_frames

    framing = Framing(1024, 512, "sqrt-hann", context=63, grid=192)
    channel = ChannelJob(framing, np.zeros(1, np.float32), frames, offset=512)
    assert segment_frames(Job([channel]), 2, max_frames) == expected

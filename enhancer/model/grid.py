"""Segments: the unit of work a backend runs, a run of consecutive frames given as samples.

A worker takes a segment's samples, cuts them into frames, windows them, runs the model and
overlap-adds the result itself, so the parent only copies samples in and out and joins the
few samples where two segments meet. For frame ``j`` of a channel, with ``R = frame / hop``::

    samples  ──  frame j covers padded samples [j·hop, j·hop + frame)
    slots    ──  hop-long pieces of output; slot s = Σ_{part=0..R-1} frame(s − part)[part]

A segment of frames ``[j0, j1)`` fully determines its *interior* slots ``[j0 + R − 1, j1)``;
the slots on either side also need the neighbouring segment's frames, so the worker returns
its first and last ``R − 1`` frames (after the synthesis window) as *edges*, and
:meth:`ChannelJob.finish` adds the parts of the slots where segments meet. Every slot is
summed part 0 first, as :meth:`~enhancer.model.framing.Framing.join` does, so the result is the
same, bit for bit, however the frames were cut into segments: one, many, or a stream's
chunks. With ``R = 1`` (consecutive frames, no window) a segment's slots are its frames.

A recurrent model (a card with ``grid_frames``) starts its state afresh on a fixed grid of
cells from a file's first frame, so its output for a frame depends on where the frame's
segment starts: :meth:`Job.locate` starts every file segment on the grid and gives it whole
cells, and the model runs a segment's cells side by side. A stream's chunks run through the
model's stream step, which carries the state across cell boundaries the same way.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from enhancer.model.framing import Framing


def whole_cells(frames: int, grid: int) -> int:
    """``frames`` rounded down to whole cells of ``grid`` frames, at least one."""
    return max(grid, frames - frames % grid)


def edge_frames(count: int, ratio: int) -> list[int]:
    """Local indices of a segment's edge frames: its first and last ``ratio - 1``."""
    if ratio == 1:
        return []
    head = min(ratio - 1, count)
    return [*range(head), *range(max(count - ratio + 1, head), count)]


def interior_slots(count: int, ratio: int) -> int:
    """How many slots a segment of ``count`` frames determines on its own."""
    return max(0, count - ratio + 1)


def input_length(framing: Framing, count: int) -> int:
    """Samples a segment of ``count`` frames spans, with the model's context frames before."""
    return (count + framing.context - 1) * framing.hop_length + framing.frame_length


def result_length(framing: Framing, count: int) -> int:
    """Floats a worker writes for a segment: its interior slots, then its edge frames."""
    ratio = framing.frame_length // framing.hop_length
    return (interior_slots(count, ratio) * framing.hop_length
            + len(edge_frames(count, ratio)) * framing.frame_length)


def run_segment(run_model, framing: Framing, samples: np.ndarray, count: int,
                out: np.ndarray) -> None:
    """What a worker does with a segment: frame, window, run, overlap-add into ``out``.

    ``samples`` holds :func:`input_length` samples; ``out`` gets :func:`result_length`
    floats. ``run_model`` maps ``[n, frame]`` float32 frames to as many processed frames.
    The first ``framing.context`` frames of ``samples`` are context: the model sees them, and
    their outputs are dropped.
    """
    frame, hop, context = framing.frame_length, framing.hop_length, framing.context
    ratio = frame // hop
    view = np.lib.stride_tricks.sliding_window_view(samples[:input_length(framing, count)],
                                                    frame)[::hop]
    if not framing.overlapping:
        out[:count * frame] = run_model(np.ascontiguousarray(view))[context:].reshape(-1)
        return
    processed = run_model(view * framing.window_array)[context:]
    shaped = (processed * framing.synthesis_array).reshape(count, ratio, hop)
    inner = interior_slots(count, ratio)
    slots = out[:inner * hop].reshape(inner, hop)
    slots[:] = 0
    for part in range(ratio):  # part 0 first, as Framing.join sums
        first = ratio - 1 - part
        slots += shaped[first:first + inner, part]
    edges = edge_frames(count, ratio)
    out[inner * hop:inner * hop + len(edges) * frame] = shaped[edges].reshape(-1)


def run_stream_step(run_step, framing: Framing, samples: np.ndarray, count: int,
                    out: np.ndarray, state: np.ndarray, state_out: np.ndarray) -> None:
    """A stream chunk's segment through the model's stream step twin: as :func:`run_segment`
    (``framing.context`` is the chunk's: the look-back on a stream's first chunk, none after
    it), the model's state read from ``state`` and the state after written to
    ``state_out``. ``run_step`` maps (frames, state) to (processed frames, state after)."""
    def run_model(frames: np.ndarray) -> np.ndarray:
        processed, after = run_step(frames, state)
        state_out[:] = after
        return processed

    run_segment(run_model, framing, samples, count, out)


def stream_step_refusal(job: Job, runs_stream_steps: bool,
                        max_segment_frames: int) -> str | None:
    """Why a backend cannot run ``job``'s stream step chunks, or None if it can: each is one
    segment (its state goes through it in one piece), on a model that has a stream step."""
    stepped = [c.num_frames for c in job.channels if c.state is not None]
    if stepped and (not runs_stream_steps or max(stepped) > max_segment_frames):
        return (f"a stream step chunk needs a model with a stream step and at most "
                f"{max_segment_frames} frames a channel, got {max(stepped)}")
    return None


@dataclass(eq=False)
class ChannelJob:
    """One channel's samples at the model's rate, and the slots its segments fill.

    ``samples[i]`` is padded sample ``i + offset``: offline audio has ``frame - hop`` zeros
    of lead-in before it (``offset = frame - hop``); a stream's chunk is already padded and
    starts with its context (``offset = -context · hop``). Samples before the start or past
    the end read as zeros.
    """

    framing: Framing
    samples: np.ndarray
    num_frames: int
    offset: int
    # A stream chunk run by the model's stream step twin: the stream's state before the
    # chunk; after it, in ``state_out`` (None: frames run with their look-back, as files).
    state: np.ndarray | None = None
    state_out: np.ndarray | None = field(init=False, default=None)
    slots: np.ndarray = field(init=False)
    edges: dict[int, np.ndarray] = field(init=False, default_factory=dict)
    starts: list[int] = field(init=False, default_factory=list)  # of the segments stored

    def __post_init__(self) -> None:
        ratio = self.framing.frame_length // self.framing.hop_length
        self.slots = np.empty((self.num_frames + ratio - 1) * self.framing.hop_length,
                              np.float32)

    @classmethod
    def offline(cls, framing: Framing, audio: np.ndarray) -> ChannelJob:
        """The whole of ``audio``, framed as :meth:`Framing.split` frames it."""
        return cls(framing, audio, framing.frame_count(audio.shape[0]),
                   framing.frame_length - framing.hop_length)

    @property
    def ratio(self) -> int:
        return self.framing.frame_length // self.framing.hop_length

    def input_for(self, first: int, count: int, out: np.ndarray,
                  context: int | None = None) -> int:
        """Write the samples of frames ``[first, first + count)``, after those of their
        context frames (``context``, or the framing's), into ``out``; return how many (zeros
        where they fall before or after the audio)."""
        framing = self.framing if context is None else self.framing.with_context(context)
        length = input_length(framing, count)
        start = (first - framing.context) * framing.hop_length - self.offset
        lo, hi = max(start, 0), min(start + length, self.samples.shape[0])
        if hi <= lo:
            out[:length] = 0
            return length
        out[:lo - start] = 0
        out[lo - start:hi - start] = self.samples[lo:hi]
        out[hi - start:length] = 0
        return length

    def store(self, first: int, count: int, result: np.ndarray) -> None:
        """Take a worker's result for frames ``[first, first + count)``."""
        hop, frame, ratio = self.framing.hop_length, self.framing.frame_length, self.ratio
        self.starts.append(first)
        if not self.framing.overlapping:
            self.slots[first * frame:(first + count) * frame] = result[:count * frame]
            return
        inner = interior_slots(count, ratio)
        start = (first + ratio - 1) * hop
        self.slots[start:start + inner * hop] = result[:inner * hop]
        for k, local in enumerate(edge_frames(count, ratio)):
            at = inner * hop + k * frame
            self.edges[first + local] = result[at:at + frame].copy()

    def finish(self, num_samples: int, skip_lead: bool = True) -> np.ndarray:
        """Join where segments meet; return ``num_samples`` samples (after the lead-in)."""
        if self.framing.overlapping:
            self._join_edges()
        lead = self.offset if skip_lead else 0
        return self.slots[lead:lead + num_samples]

    def join_inside(self) -> None:
        """Join where this job's own segments meet, leaving the slots that also need frames
        before or after the job (a stream's chunk joins those with its neighbours)."""
        if self.framing.overlapping:
            self._join_edges(lambda slot: self.ratio - 1 <= slot < self.num_frames, keep=True)

    def _join_edges(self, wanted: Callable[[int], bool] = lambda slot: True,
                    keep: bool = False) -> None:
        """Sum the slots that no one segment determined, part 0 first."""
        hop, ratio = self.framing.hop_length, self.ratio
        for slot in filter(wanted, self._open_slots()):
            total = np.zeros(hop, np.float32)
            for part in range(ratio):
                shaped = self.edges.get(slot - part)
                if shaped is not None:
                    total += shaped[part * hop:(part + 1) * hop]
            self.slots[slot * hop:(slot + 1) * hop] = total
        if not keep:
            self.edges.clear()

    def _open_slots(self) -> list[int]:
        """The slots outside every segment's interior: the ``R - 1`` from each segment's
        first frame on, and the ``R - 1`` after the last frame."""
        ratio, end = self.ratio, self.num_frames + self.ratio - 1
        starts = [*self.starts, self.num_frames]
        return sorted({s for start in starts for s in range(start, min(start + ratio - 1, end))})


@dataclass(eq=False)
class Job:
    """Every channel of one request (or one stream chunk): the unit a backend takes turns on.

    A backend asks for the next segment of at most ``max_count`` frames; a segment never
    spans two channels.
    """

    channels: list[ChannelJob]
    offsets: list[int] = field(init=False)
    num_frames: int = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = [0, *itertools.accumulate(c.num_frames for c in self.channels)]
        self.num_frames = self.offsets[-1]

    def locate(self, first: int, max_count: int) -> tuple[ChannelJob, int, int]:
        """The channel holding job frame ``first``, the frame's index in it, and how many
        frames (at most ``max_count``) follow in that channel.

        On a model's grid (``framing.grid``), a file's segments are whole cells (at least one,
        whatever ``max_count``) but for the channel's last, so each starts on the grid; a
        stream chunk run by the stream step (``state``) is one segment, as it comes."""
        index = bisect.bisect_right(self.offsets, first) - 1
        channel = self.channels[index]
        local = first - self.offsets[index]
        if channel.state is not None:  # its state goes through it in one piece, at any priority
            return channel, local, channel.num_frames - local
        grid = channel.framing.grid
        if grid:
            assert local % grid == 0, f"a segment of a model on a grid starts at {local}"
            max_count = whole_cells(max_count, grid)
        return channel, local, min(max_count, channel.num_frames - local)


# The smallest segment a request is cut into: below it, the pipe and wake-up costs show.
MIN_SEGMENT_FRAMES = 16


def segment_frames(job: Job, workers: int, max_frames: int) -> int:
    """Frames per segment for a request: equal segments, a multiple of the workers and at
    least two each, so it spreads evenly over every worker, none over ``max_frames``; whole
    cells for a model on a grid."""
    workers = max(1, workers)
    widest = max(c.num_frames for c in job.channels)
    pieces = max(2 * workers, -(-widest // max_frames))
    pieces = -(-pieces // workers) * workers
    size = min(max_frames, max(-(-widest // pieces), MIN_SEGMENT_FRAMES))
    grid = job.channels[0].framing.grid
    if grid:  # whole cells, rounded up (Job.locate would round down)
        size = min(-(-size // grid) * grid, whole_cells(max_frames, grid))
    return size

"""Streams: audio enhanced chunk by chunk as it arrives, identical to the whole-file result.

A stream is a long-lived session. Its state lives here, on the caller's side, never in a
worker: the resamplers (``soxr.ResampleStream``), the samples carried over between frames,
the overlap-add tail and, for a model with a stream step twin, the model's state. Each
chunk's new frames go to the backend as one block at live priority, so any worker can take
any chunk, a crashed worker loses only that chunk, and stream blocks overtake file requests.

A model with look-back sees, with each chunk, the frames before it. With a stream step (the
recurrent denoiser's) only the first chunk brings them; every later chunk brings the model's
state instead (the denoiser's: its level window, the GRUs' hidden vectors and held gains,
3 KB), goes in with it and comes back with the state after it, so the worker transforms the
chunk's own frames only. A recurrent model on a grid (its card's ``grid_frames``) or chained
(``chained``) streams only that way.

Every stage reproduces its whole-file twin bit for bit: the resamplers are libsoxr's, whose
stream output does not depend on how the input is cut; the framer pads like
:class:`~enhancer.model.framing.WindowedFrames`; the joiner adds the frames' parts in the same order
as :meth:`~enhancer.model.framing.Framing.join`. So the concatenated output of a stream equals
``AudioEnhancer.enhance`` on the same audio, sample for sample.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

import numpy as np

from enhancer.audio.formats import check_sample_rate, check_samples
from enhancer.audio.resample import resampled_length
from enhancer.backends.base import Priority
from enhancer.errors import InvalidAudio, ModelError
from enhancer.model.framing import Framing
from enhancer.model.grid import ChannelJob, Job, input_length

if TYPE_CHECKING:
    from enhancer.audio_enhancer import AudioEnhancer

_stream_ids = itertools.count(1)


class StreamFramer:
    """Keep a stream's samples until they fill frames; hand out each chunk's new frames as
    a :class:`~enhancer.model.grid.ChannelJob` (padded like the whole-file path's frames).

    ``stepped``: the chunks after the first carry no look-back frames (the model's stream
    step twin carries its state instead). ``cells``: chunks are whole cells of that many
    frames (but the last), each with its look-back, as a file's segments are."""

    def __init__(self, framing: Framing, stepped: bool = False, cells: int = 0) -> None:
        self.framing = framing
        self._stepped = stepped
        self._cells = cells
        # The whole-file path's zero lead-in, and silence as the first frames' context.
        self._context = framing.context * framing.hop_length
        lead = framing.frame_length - framing.hop_length + self._context
        self._pending = np.zeros(lead, np.float32)
        self.frames_out = 0

    def push(self, samples: np.ndarray) -> ChannelJob:
        """The frames completed by ``samples``."""
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        return self._take()

    def finish(self, samples: np.ndarray, total_samples: int) -> ChannelJob:
        """The frames of the last ``samples``, zero-padded, so the stream has as many frames
        as the whole would."""
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        missing = max(0, self.framing.frame_count(total_samples) - self.frames_out)
        needed = input_length(self.framing, missing) if missing else 0
        if self._pending.shape[0] < needed:
            self._pending = np.concatenate(
                [self._pending, np.zeros(needed - self._pending.shape[0], np.float32)])
        return self._take(limit=missing)

    def _take(self, limit: int | None = None) -> ChannelJob:
        frame, hop = self.framing.frame_length, self.framing.hop_length
        available = self._pending.shape[0] - self._context
        count = 0 if available < frame else (available - frame) // hop + 1
        if limit is not None:
            count = min(count, limit)
        elif self._cells:
            count -= count % self._cells
        samples = self._pending[:input_length(self.framing, count)] if count else (
            self._pending[:0])
        job = ChannelJob(self.framing, samples, count, offset=-self._context)
        self.frames_out += count
        if count and self._stepped and self._context:
            # From now on the state stands for the look-back: drop its frames.
            self._pending = self._pending[(count + self.framing.context) * hop:].copy()
            self._context = 0
            self.framing = self.framing.with_context(0)
        else:
            self._pending = self._pending[count * hop:].copy()
        return job


class StreamJoiner:
    """Put a stream's chunks back together in order, as the whole-file path joins its
    segments: each chunk is a segment of the stream's frames."""

    def __init__(self, framing: Framing, latency: int = 0) -> None:
        self.framing = framing
        self.ratio = framing.frame_length // framing.hop_length
        self._edges: dict[int, np.ndarray] = {}  # the last frames, by the stream's index
        self._next_frame = 0
        # The lead-in, and the model's own delay (its card's latency_samples).
        self._to_skip = framing.frame_length - framing.hop_length + latency
        self.samples_out = 0

    def push(self, chunk: ChannelJob) -> np.ndarray:
        """The samples the chunk completes: its frames' slots, in order."""
        hop, ratio, first = self.framing.hop_length, self.ratio, self._next_frame
        count = chunk.num_frames
        if not self.framing.overlapping:
            self._next_frame += count
            return self._emit(chunk.slots[:count * hop])
        chunk.join_inside()  # a chunk larger than a segment was run as several
        self._edges.update({first + local: shaped for local, shaped in chunk.edges.items()})
        pieces = [self._join_slot(slot) for slot in range(first, first + min(ratio - 1, count))]
        inner = max(0, count - ratio + 1)
        pieces.append(chunk.slots[(ratio - 1) * hop:(ratio - 1 + inner) * hop])
        self._next_frame += count
        for old in [f for f in self._edges if f < self._next_frame - ratio + 1]:
            del self._edges[old]
        return self._emit(np.concatenate(pieces))

    def finish(self, chunk: ChannelJob, total_samples: int) -> np.ndarray:
        """The last chunk and the slots after the last frame; ``total_samples`` in all."""
        already = self.samples_out
        out = self.push(chunk)
        if self.framing.overlapping:
            end = self._next_frame
            tail = [self._join_slot(slot) for slot in range(end, end + self.ratio - 1)]
            out = np.concatenate([out, self._emit(np.concatenate(tail))])
        out = out[:max(0, total_samples - already)]
        self.samples_out = already + out.shape[0]
        return out

    def _join_slot(self, slot: int) -> np.ndarray:
        """A slot where chunks meet, summed part 0 first, as segments are joined."""
        hop = self.framing.hop_length
        total = np.zeros(hop, np.float32)
        for part in range(self.ratio):
            shaped = self._edges.get(slot - part)
            if shaped is not None:
                total += shaped[part * hop:(part + 1) * hop]
        return total

    def _emit(self, samples: np.ndarray) -> np.ndarray:
        skip = min(self._to_skip, samples.shape[0])
        self._to_skip -= skip
        samples = samples[skip:]
        self.samples_out += samples.shape[0]
        return samples


class EnhancerStream:
    """One stream of ``channels`` channels at ``sample_rate``, through an ``AudioEnhancer``.

    ``whole_cells``: for a file read in blocks, not a live stream; a recurrent model on a grid
    then takes whole cells, in parallel, instead of every frame through its stream step.

    ``await push(chunk)`` returns the enhanced samples ready so far (``[m, channels]``
    float32; often none for tiny chunks), ``await finish()`` the rest: in all, exactly as many
    samples as were pushed, equal to ``enhancer.enhance`` on the whole. Calls must not
    overlap: push the next chunk once the previous push has returned.
    """

    def __init__(self, enhancer: AudioEnhancer, sample_rate: int, channels: int = 1,
                 atten_lim_db: float | None = None, whole_cells: bool = False) -> None:
        import soxr

        from enhancer.model.attenuation import attenuation_floor

        self._floor = attenuation_floor(atten_lim_db)
        # With a floor, the original is mixed back in, sample for sample: keep what came in
        # until the matching output leaves.
        self._dry = np.zeros((0, channels), np.float32)

        self.enhancer = enhancer
        self.sample_rate = check_sample_rate(sample_rate)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.stream_id = f"stream-{next(_stream_ids)}"
        model_rate = enhancer.model_sample_rate
        self._resample = sample_rate != model_rate
        if self._resample:
            self._to_model = soxr.ResampleStream(sample_rate, model_rate, channels,
                                                 dtype="float32")
            self._from_model = soxr.ResampleStream(model_rate, sample_rate, channels,
                                                   dtype="float32")
        # A file read in blocks (whole_cells) goes to a recurrent model as a file does: whole
        # grid cells with their look-back, which the workers run side by side, not one step
        # after another; its output comes up to a cell later than a live stream's would.
        cells = enhancer.framing.grid if whole_cells else 0
        # The model's stream step twin, where the backend runs it (every backend does).
        self.stepped = (enhancer.card.stream_step_path is not None and not cells
                        and getattr(enhancer.backend, "runs_stream_steps", False))
        if enhancer.framing.grid and not self.stepped and not cells:
            raise ModelError(f"model {enhancer.card.name} streams only through its stream "
                             f"step, which this backend does not run")
        self._states = [np.zeros(enhancer.card.stream_state_size, np.float32)
                        if self.stepped else None for _ in range(channels)]
        # A stepped chunk is one segment a channel: larger pushes go in pieces of this many
        # samples at the model's rate, each completing fewer frames than a segment holds.
        self._piece = max(1, enhancer.max_segment_frames - 1) * enhancer.framing.hop_length
        self._framers = [StreamFramer(enhancer.framing, self.stepped, cells)
                         for _ in range(channels)]
        # A model whose output lags (DeepFilterNet3's look-ahead) runs that many samples past
        # the end, and its first ones are dropped, as the whole-file path does.
        self._latency = enhancer.card.latency_samples
        self._joiners = [StreamJoiner(enhancer.framing, self._latency) for _ in range(channels)]
        self.samples_in = 0
        self.samples_out = 0
        self._model_samples = 0
        self._chunks = itertools.count()
        self._held = np.zeros((0, channels), np.float32)
        self.finished = False
        # Live by default; a job's blocks (enhancer.jobs) go at the lowest priority instead.
        self.priority = Priority.LIVE

    @property
    def algorithmic_latency_s(self) -> float:
        """Delay the framing adds (one frame's worth of samples at the model's rate) and the
        model's own (its look-ahead)."""
        return ((self.enhancer.frame_length + self._latency)
                / self.enhancer.model_sample_rate)

    async def push(self, chunk: np.ndarray) -> np.ndarray:
        """Take ``[n, channels]`` (or ``[n]`` for mono) float samples; return those ready."""
        chunk = self._check(chunk)
        self.samples_in += chunk.shape[0]
        if self._floor is not None:
            self._dry = np.concatenate([self._dry, chunk])
        at_model_rate = self._to_model.resample_chunk(chunk) if self._resample else chunk
        self._model_samples += at_model_rate.shape[0]
        if not self.stepped or at_model_rate.shape[0] <= self._piece:
            jobs = [f.push(at_model_rate[:, c]) for c, f in enumerate(self._framers)]
            return await self._run(jobs, last=False)
        outs = []
        for at in range(0, at_model_rate.shape[0], self._piece):
            piece = at_model_rate[at:at + self._piece]
            jobs = [f.push(piece[:, c]) for c, f in enumerate(self._framers)]
            outs.append(await self._run(jobs, last=False))
        return np.concatenate(outs)

    async def finish(self) -> np.ndarray:
        """Flush the tail: the stream's output then has as many samples as its input."""
        if self.finished:
            raise InvalidAudio("the stream is already finished")
        self.finished = True
        empty = np.zeros((0, self.channels), np.float32)
        total = self._model_samples
        tail = empty
        if self._resample:
            tail = self._to_model.resample_chunk(empty, last=True)
            total = resampled_length(self.samples_in, self.enhancer.model_sample_rate,
                                     self.sample_rate)
            pad = total - self._model_samples - tail.shape[0]
            tail = np.concatenate([tail, np.zeros((max(0, pad), self.channels), np.float32)])
        jobs = [f.finish(tail[:, c], total + self._latency)
                for c, f in enumerate(self._framers)]
        return await self._run(jobs, last=True, model_total=total)

    async def _run(self, channels: list[ChannelJob], last: bool,
                   model_total: int = 0) -> np.ndarray:
        if channels[0].num_frames:
            for channel, state in zip(channels, self._states, strict=True):
                channel.state = state
            job = Job(channels)
            future = self.enhancer.backend.run(
                job, f"{self.stream_id}:{next(self._chunks)}", None, self.priority)
            try:
                await asyncio.wrap_future(future)
            except BaseException:
                future.cancel()
                raise
            if self.stepped:
                self._states = [channel.state_out for channel in channels]
        if last:
            joined = [j.finish(c, model_total)
                      for j, c in zip(self._joiners, channels, strict=True)]
        else:
            joined = [j.push(c) for j, c in zip(self._joiners, channels, strict=True)]
        at_model_rate = np.stack(joined, axis=1)
        if self._resample:
            out = self._from_model.resample_chunk(at_model_rate, last=last)
        else:
            out = at_model_rate
        return self._emit(out, last)

    def _emit(self, out: np.ndarray, last: bool) -> np.ndarray:
        # Never more than came in (held back, not lost); at the end exactly as many, cut or
        # zero-padded like the whole-file path's fit_length.
        out = np.concatenate([self._held, out]) if self._held.shape[0] else out
        room = self.samples_in - self.samples_out
        self._held = out[room:] if not last else self._held[:0]
        out = out[:room]
        if last and out.shape[0] < room:
            out = np.concatenate([out, np.zeros((room - out.shape[0], self.channels),
                                                np.float32)])
        self.samples_out += out.shape[0]
        out = np.ascontiguousarray(out, dtype=np.float32)
        if self._floor is not None:
            from enhancer.model.attenuation import limit_attenuation

            out = limit_attenuation(self._dry[:out.shape[0]], out, self._floor)
            self._dry = self._dry[out.shape[0]:]
        return out

    def _check(self, chunk: np.ndarray) -> np.ndarray:
        if self.finished:
            raise InvalidAudio("the stream is already finished")
        chunk = check_samples(chunk, "chunk")
        if chunk.ndim == 1:
            chunk = chunk[:, None]
        if chunk.shape[1] != self.channels:
            raise InvalidAudio(f"chunk has {chunk.shape[1]} channels, the stream "
                               f"{self.channels}")
        return np.ascontiguousarray(chunk, dtype=np.float32)

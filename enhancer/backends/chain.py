"""Files through a model whose state runs from a file's first frame to its last.

A model card's ``chained`` (the denoiser's, DeepFilterNet3's) says the model cannot start
afresh anywhere inside a file without changing what it outputs there: a cell started on
another worker from a new state leaves a seam. So a file runs as a stream does, one chain of
stream steps per channel::

    file job ── channel 0 ── piece 0 ──state──▶ piece 1 ──state──▶ …   (one at a time)
             └─ channel 1 ── piece 0 ──state──▶ piece 1 ──state──▶ …   (beside it)

Each piece (at most ``piece_frames`` frames) goes to the inner backend, at the job's priority,
when the state from the piece before it comes back; the channels of a job, and other jobs,
run side by side on the other workers. The first piece brings the model's look-back frames
(silence before the file), as a stream's first chunk does; the state stands for them after
it. Overlapping frames are joined where pieces meet as segments are
(:meth:`~enhancer.model.grid.ChannelJob.finish`), so the result is the same, bit for bit,
however the file is cut. The output of a model with consecutive frames may lag its input by
``latency`` samples: a channel runs that many samples (zeros) past its end, and each piece's
output is stored that many samples earlier, so the job's result is aligned with its input. A
stream's chunks (jobs whose channels already carry a state) go to the inner backend as they
are.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Any

import numpy as np

from enhancer.backends.base import Backend, Priority, Progress, fail, log
from enhancer.errors import ModelError
from enhancer.model.card import ModelCard
from enhancer.model.framing import Framing
from enhancer.model.grid import ChannelJob, Job, input_length, interior_slots


def chained(backend: Backend, card: ModelCard, framing: Framing,
            max_segment_frames: int) -> Backend:
    """``backend`` itself, or for a chained model's card a :class:`ChainedBackend` over it."""
    if not card.chained:
        return backend
    return ChainedBackend(backend, framing, card.stream_state_size, card.latency_samples,
                          max_segment_frames)


class ChainedBackend:
    """Wraps a backend that runs stream steps; runs each file channel as one chain of them."""

    def __init__(self, inner: Backend, framing: Framing, state_size: int, latency: int,
                 piece_frames: int) -> None:
        if framing.overlapping and latency:
            raise ModelError(f"a chained model with overlapping frames has no latency, got "
                             f"{latency} samples")
        self.inner = inner
        self.framing, self.state_size, self.latency = framing, state_size, latency
        self.piece_frames = piece_frames
        self._chains: set[_ChainedJob] = set()
        self._chains_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # runs_stream_steps, max_segment_frames…
        return getattr(self.inner, name)

    @property
    def pending_sessions(self) -> int:
        """Requests not yet answered: a file's chain counts once, not as its pieces."""
        with self._chains_lock:
            chains = list(self._chains)
        pieces = sum(chain.pieces_in_flight() for chain in chains)
        inner = getattr(self.inner, "pending_sessions", 0)
        return max(len(chains), inner - pieces + len(chains))

    @property
    def frames_processed(self) -> int:
        return self.inner.frames_processed

    @frames_processed.setter
    def frames_processed(self, value: int) -> None:
        self.inner.frames_processed = value

    @property
    def restarts(self) -> int:
        return self.inner.restarts

    @property
    def is_ready(self) -> bool:
        return self.inner.is_ready

    @property
    def worker_pids(self) -> list[int]:
        return self.inner.worker_pids

    def close(self) -> None:
        self.inner.close()

    def run(self, job: Job, session_id: str, progress: Progress | None = None,
            priority: Priority = Priority.FILE) -> Future[Job]:
        if any(channel.state is not None for channel in job.channels):
            return self.inner.run(job, session_id, progress, priority)
        chain = _ChainedJob(self, job, session_id, progress, priority)
        with self._chains_lock:
            self._chains.add(chain)
        chain.future.add_done_callback(lambda _: self._forget(chain))
        return chain.start()

    def _forget(self, chain: _ChainedJob) -> None:
        with self._chains_lock:
            self._chains.discard(chain)


class _ChainedJob:
    """One file job's chains: a piece of each channel in flight, the next sent when it is
    back; the future fails on the first error and is cancelled with what is in flight."""

    def __init__(self, backend: ChainedBackend, job: Job, session_id: str,
                 progress: Progress | None, priority: Priority) -> None:
        self.backend, self.job, self.session_id = backend, job, session_id
        self.progress, self.priority = progress, priority
        self.future: Future[Job] = Future()
        self._lock = threading.Lock()
        self._in_flight: dict[int, Future[Job]] = {}
        self._left = len(job.channels)

    def start(self) -> Future[Job]:
        self.future.add_done_callback(self._cancel_in_flight)
        framing = self.backend.framing
        for index, channel in enumerate(self.job.channels):
            total = channel.num_frames if framing.overlapping else math.ceil(
                (channel.samples.shape[0] + self.backend.latency) / framing.hop_length)
            self._advance(index, 0, total, np.zeros(self.backend.state_size, np.float32))
        return self.future

    def _advance(self, index: int, first: int, total: int, state: np.ndarray) -> None:
        """Send the channel's pieces from ``first`` on: the next when one is back (in a loop
        while the inner backend answers at once, as the inline one does)."""
        channel, framing = self.job.channels[index], self.backend.framing
        while True:
            count = min(self.backend.piece_frames, total - first)
            # The look-back (silence before the file) only in front of the first piece.
            piece_framing = framing.with_context(framing.context if first == 0 else 0)
            samples = np.empty(input_length(piece_framing, count), np.float32)
            channel.input_for(first, count, samples, piece_framing.context)
            piece = ChannelJob(piece_framing, samples, count,
                               offset=-piece_framing.context * framing.hop_length, state=state)
            with self._lock:
                if self.future.done():
                    return
                inner = self.backend.inner.run(
                    Job([piece]), f"{self.session_id}:{index}:{first}", None, self.priority)
                self._in_flight[index] = inner
            if not inner.done():
                inner.add_done_callback(functools.partial(
                    self._continue, index=index, first=first, total=total, piece=piece))
                return
            after = self._take(inner, index, first, total, piece)
            if after is None:
                return
            first, state = first + count, after

    def _continue(self, done: Future[Job], index: int, first: int, total: int,
                  piece: ChannelJob) -> None:
        after = self._take(done, index, first, total, piece)
        if after is not None:
            self._advance(index, first + piece.num_frames, total, after)

    def _take(self, done: Future[Job], index: int, first: int, total: int,
              piece: ChannelJob) -> np.ndarray | None:
        """Store a piece's output; the state for the next piece, or None when the channel
        is done or the job failed."""
        if done.cancelled() or self.future.done():
            return None
        error = done.exception()
        if error is not None:
            fail(self.future, error)
            return None
        channel, count = self.job.channels[index], piece.num_frames
        self._store(channel, first, piece)
        self._report(min(first + count, channel.num_frames) - min(first, channel.num_frames))
        if first + count < total:
            assert piece.state_out is not None
            return piece.state_out
        with self._lock:
            self._in_flight.pop(index, None)
            self._left -= 1
            finished = self._left == 0
        if finished:
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                self.future.set_result(self.job)
        return None

    def _store(self, channel: ChannelJob, first: int, piece: ChannelJob) -> None:
        """Put a piece's output in its place among the channel's slots (its edge frames,
        with overlapping frames, to be joined with the next piece's)."""
        hop, count = self.backend.framing.hop_length, piece.num_frames
        if self.backend.framing.overlapping:
            ratio = channel.ratio
            inner = interior_slots(count, ratio) * hop
            at = (first + ratio - 1) * hop
            channel.slots[at:at + inner] = piece.slots[(ratio - 1) * hop:(ratio - 1) * hop + inner]
            channel.edges.update({first + local: edge for local, edge in piece.edges.items()})
            channel.starts.append(first)
            return
        # Piece output sample i is the channel's output sample first·hop + i − latency.
        start = first * hop - self.backend.latency
        lo, hi = max(start, 0), min(start + count * hop, channel.slots.shape[0])
        if hi > lo:
            channel.slots[lo:hi] = piece.slots[lo - start:hi - start]

    def pieces_in_flight(self) -> int:
        """How many of this job's pieces the inner backend holds now."""
        with self._lock:
            return sum(not inner.done() for inner in self._in_flight.values())

    def _report(self, frames: int) -> None:
        if self.progress is not None and frames:
            try:
                self.progress(frames)
            except Exception:
                log.exception("a progress callback failed")

    def _cancel_in_flight(self, _: Future[Job]) -> None:
        with self._lock:
            in_flight = list(self._in_flight.values())
        for inner in in_flight:
            inner.cancel()

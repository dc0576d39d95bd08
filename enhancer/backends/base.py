"""The interface every way of running the model offers to ``AudioEnhancer``.

A backend takes a :class:`~enhancer.model.grid.Job` (the samples of every channel of one
request, or of one chunk of a stream, at the model's rate) and runs it segment by segment
with :func:`enhancer.model.grid.run_segment`, storing each result in the job
(:meth:`~enhancer.model.grid.ChannelJob.store`); its future completes with the job. It knows how
segments get run (in this process, on a pool of worker processes, or elsewhere), and nothing
of what the audio is: rates, channels and where segments meet stay with the façade.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from enhancer.model.grid import Job

log = logging.getLogger("enhancer.pool")

Progress = Callable[[int], None]
"""Called with the number of frames just finished."""


class Priority(IntEnum):
    """Which blocks a backend runs first: live streams', then files' (``/enhance``), then
    jobs', so a long upload adds no latency to a call and a long job none to a request."""

    LIVE = 0
    FILE = 1
    JOB = 2


class Backend(Protocol):
    frames_processed: int
    """Frames run so far, for metrics."""

    @property
    def restarts(self) -> int:
        """Workers replaced after dying, for metrics."""
        ...

    def run(self, job: Job, session_id: str, progress: Progress | None = None,
            priority: Priority = Priority.FILE) -> Future[Job]:
        """Queue every frame of ``job``; the future completes with the job, its results in.

        Cancelling the future drops the segments not yet run. Errors are set on the future
        (``WorkerCrashed``, ``ModelError``, ``PoolBroken``, ``EnhancerClosed``), never raised
        from another thread.
        """
        ...

    @property
    def is_ready(self) -> bool:
        """True when every worker is loaded and serving."""
        ...

    @property
    def worker_pids(self) -> list[int]:
        """Process IDs of the worker processes (empty when there are none)."""
        ...

    def close(self) -> None:
        """Stop the workers; requests still queued fail with ``EnhancerClosed``."""
        ...


@dataclass(eq=False)
class Session:
    """A job on its way through a backend: the pool's or Ray's."""

    session_id: str
    job: Job
    future: Future[Job]
    progress: Progress | None
    priority: Priority
    segment_frames: int  # frames per segment, at most
    next_frame: int = 0  # of the job: the next segment starts here
    frames_done: int = 0
    # Segments to run again (first frame, count): those a hung worker held, once each.
    retry: deque[tuple[int, int]] = field(default_factory=deque)
    retried: set[int] = field(default_factory=set)

    def has_work(self) -> bool:
        return bool(self.retry) or self.next_frame < self.job.num_frames

    def count_done(self, count: int) -> bool:
        """``count`` more frames are in: tell the progress callback; True when all are."""
        self.frames_done += count
        if self.progress is not None:
            try:
                self.progress(count)
            except Exception:
                log.exception("a progress callback failed")
        return self.frames_done == self.job.num_frames


def fail(future: Future, error: BaseException) -> None:
    """Fail ``future`` unless it is already done (finished, failed or cancelled)."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)

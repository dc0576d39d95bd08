"""The interface every way of running the model offers to ``AudioEnhancer``.

A backend takes a :class:`~enhancer.segments.Job` (the samples of every channel of one
request, or of one chunk of a stream, at the model's rate) and runs it segment by segment
with :func:`enhancer.segments.run_segment`, storing each result in the job
(:meth:`~enhancer.segments.ChannelJob.store`); its future completes with the job. It knows how
segments get run (in this process, on a pool of worker processes, or elsewhere), and nothing
of what the audio is: rates, channels and where segments meet stay with the façade.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from enum import IntEnum
from typing import Protocol

from enhancer.segments import Job

Progress = Callable[[int], None]
"""Called with the number of frames just finished."""


class Priority(IntEnum):
    """Which blocks a backend runs first: live streams' before files', so a long upload
    adds no latency to a call."""

    LIVE = 0
    FILE = 1


class Backend(Protocol):
    frames_processed: int
    """Frames run so far, for metrics."""

    restarts: int
    """Workers replaced after dying, for metrics."""

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

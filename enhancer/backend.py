"""The interface every way of running the model offers to ``AudioEnhancer``.

A backend takes the frames of one channel (a :class:`~enhancer.framing.Frames`) and returns a
future of the processed frames, ``[num_frames, frame_length]`` float32, in order. It knows
how blocks get run (in this process, on a pool of worker processes, or elsewhere), and
nothing of what the audio is: framing, overlap-add, channels and rates stay in the façade.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from enum import IntEnum
from typing import Protocol

import numpy as np

from enhancer.framing import Frames

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

    def run(self, frames: Frames, session_id: str, progress: Progress | None = None,
            priority: Priority = Priority.FILE) -> Future[np.ndarray]:
        """Queue every frame of ``frames``; the future gets the processed frames.

        Cancelling the future drops the frames not yet run. Errors are set on the future
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

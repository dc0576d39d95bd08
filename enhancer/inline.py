"""The in-process backend (``num_processes=0``): the model runs in the calling thread.

Simplest to debug and the reference the pool is tested against. One interpreter is shared
by every caller, so calls take turns on a lock.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from enhancer.backend import Priority, Progress
from enhancer.errors import EnhancerClosed, ModelError
from enhancer.framing import Frames
from enhancer.model_runner import ModelRunner


class InlineBackend:
    """Run every block in the caller's thread with one :class:`ModelRunner`."""

    def __init__(self, runner: ModelRunner, frames_per_block: int) -> None:
        self._runner = runner
        self.frames_per_block = frames_per_block
        self.frames_processed = 0
        self.restarts = 0
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def load(cls, model_path: str | Path, num_threads: int,
             frames_per_block: int) -> InlineBackend:
        return cls(ModelRunner(model_path, num_threads), frames_per_block)

    def run(self, frames: Frames, session_id: str, progress: Progress | None = None,
            priority: Priority = Priority.FILE) -> Future[np.ndarray]:
        """Run every frame now; the returned future is already done."""
        future: Future[np.ndarray] = Future()
        if self._closed:
            future.set_exception(EnhancerClosed("the enhancer is closed"))
            return future
        output = np.empty((frames.num_frames, self._runner.frame_length), np.float32)
        try:
            with self._lock:
                start = 0
                while start < frames.num_frames:
                    block = frames.block(start, self.frames_per_block)
                    stop = start + block.shape[0]
                    output[start:stop] = self._runner.run(block)
                    self.frames_processed += block.shape[0]
                    if progress is not None:
                        progress(block.shape[0])
                    start = stop
        except Exception as exc:
            error = ModelError(f"the model failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            future.set_exception(error)
        else:
            future.set_result(output)
        return future

    @property
    def is_ready(self) -> bool:
        return not self._closed

    @property
    def worker_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        self._closed = True

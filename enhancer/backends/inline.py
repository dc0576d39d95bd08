"""The in-process backend (``num_processes=0``): the model runs in the calling thread.

Simplest to debug and the reference the pool is tested against: the same segments, run by
the same :func:`~enhancer.model.grid.run_segment`. One interpreter is shared by every caller, so
calls take turns on a lock.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from enhancer.backends.base import Priority, Progress
from enhancer.errors import EnhancerClosed, ModelError
from enhancer.model.framing import Framing
from enhancer.model.grid import (
    Job,
    input_length,
    result_length,
    run_segment,
    run_stream_step,
    stream_step_refusal,
)
from enhancer.model.runner import FrameModel, StepModel


class InlineBackend:
    """Run every segment in the caller's thread with one model runner."""

    def __init__(self, runner: FrameModel, framing: Framing, max_segment_frames: int,
                 step_runner: StepModel | None = None) -> None:
        self._runner = runner
        self._step = step_runner
        self.runs_stream_steps = step_runner is not None
        self.framing = framing
        self.max_segment_frames = max_segment_frames
        self.frames_processed = 0
        self.restarts = 0
        self._lock = threading.Lock()
        self._closed = False
        self._samples = np.empty(input_length(framing, max_segment_frames), np.float32)
        self._result = np.empty(result_length(framing, max_segment_frames), np.float32)

    def run(self, job: Job, session_id: str, progress: Progress | None = None,
            priority: Priority = Priority.FILE) -> Future[Job]:
        """Run every segment now; the returned future is already done."""
        future: Future[Job] = Future()
        if self._closed:
            future.set_exception(EnhancerClosed("the enhancer is closed"))
            return future
        try:
            refusal = stream_step_refusal(job, self.runs_stream_steps, self.max_segment_frames)
            if refusal is not None:
                raise ValueError(refusal)
            with self._lock:
                first = 0
                while first < job.num_frames:
                    channel, local, count = job.locate(first, self.max_segment_frames)
                    channel.input_for(local, count, self._samples)
                    if channel.state is None:
                        run_segment(self._runner.run, self.framing, self._samples, count,
                                    self._result)
                    else:  # a stream chunk (one segment: stream_step_refusal)
                        assert self._step is not None
                        channel.state_out = np.empty(self._step.state_size, np.float32)
                        run_stream_step(self._step.run, channel.framing, self._samples, count,
                                        self._result, channel.state, channel.state_out)
                    channel.store(local, count, self._result)
                    self.frames_processed += count
                    if progress is not None:
                        progress(count)
                    first += count
        except Exception as exc:
            error = ModelError(f"the model failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            future.set_exception(error)
        else:
            future.set_result(job)
        return future

    @property
    def is_ready(self) -> bool:
        return not self._closed

    @property
    def worker_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        self._closed = True

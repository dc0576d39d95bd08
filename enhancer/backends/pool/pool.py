"""The worker pool: one LiteRT interpreter per process, a collector thread that feeds them.

Data flow::

    caller threads                   collector thread                 worker processes
    ──────────────                   ────────────────                 ────────────────
    run(job) ─► unprocessed_frames_queue ─► round robin ──► samples into arena ─┐
         ▲         (one Session a call)     live, then file     TASK ► pipe     ▼
         │                                                               process_audio()
    Session.future ◄── all frames in ◄── job's slots ◄── arena ◄── RESULT ◄── pipe
    (the caller joins where segments meet)

Glossary:

- *session*: one call of :meth:`WorkerPool.run`: a :class:`~enhancer.model.grid.Job` (every
  channel of one request, or one chunk of a stream), an ID, a priority and a future.
- *segment*: up to ``max_segment_frames`` consecutive frames of one channel, the unit sent
  to a worker, as samples; the worker windows, runs and overlap-adds them itself
  (:mod:`enhancer.model.grid`), so the parent only copies samples in and out. Segments are
  sized so that one long request spreads over every worker, and large enough that the pipe
  and wake-up costs vanish. For a recurrent model on a *grid* (its card's ``grid_frames``),
  every segment of a file starts on the grid and holds whole cells
  (:meth:`~enhancer.model.grid.Job.locate`), so its output does not depend on the cut.
- *task*: what one worker holds until its result comes back (:class:`Task`): one segment,
  or, when streams' chunks queue up, several chunks at once (their share of the idle
  workers, at most ``MAX_CHUNKS_PER_TASK``), so a busy pool pays one wake-up and one round
  trip for many chunks.
- *live*: a stream's chunk goes before any file's segment; while streams are live, files'
  segments are short and stay off the *live lane*, the one worker chunks go to first
  (:func:`~enhancer.backends.pool.scheduling.pick_worker`), so a chunk never waits behind a
  file. The other workers, the *file lanes*, run at a lower CPU priority
  (``FILE_LANE_NICE``): when the machine is busy, a long file takes only what the live lane,
  the API and its clients leave.
- *arena*: a worker's shared memory, made once with the worker and reused: the segment's
  samples go in, its result comes out; the pipe carries only small headers.

The design's *processed frames queue* is realised as one duplex pipe per worker, read by the
collector with ``multiprocessing.connection.wait`` (together with every worker's process
sentinel and a wake-up pipe), so nothing polls; its timeout is the next task's deadline or
the next heartbeat, with which the collector checks that idle workers still answer. One
shared queue would be simpler, but a worker killed while holding that queue's lock would
freeze every other worker, and nobody would know which block the dead worker held. With a
pipe each, the collector knows every worker's task, fails exactly that session when its
worker dies, and starts a replacement.

The collector's work is in three parts, each a module: :mod:`~enhancer.backends.pool.scheduling`
(the round robin of sessions, cut into tasks), :mod:`~enhancer.backends.pool.messaging` (the
wake-up pipe, and each worker's pipe: tasks out, results back) and
:mod:`~enhancer.backends.pool.supervision` (the workers: started, watched, replaced, stopped).
Its records are :mod:`~enhancer.backends.pool.records`; a worker runs
:mod:`~enhancer.backends.pool.worker_process`.

Threads: the collector thread alone owns the scheduler, the supervisor (the workers and their
arenas) and every task and session's progress counters. Callers touch only
``unprocessed_frames_queue`` (thread-safe), the wake-up pipe, and ``_closed`` under
``_close_lock``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

from enhancer.backends.base import Priority, Progress, Session, fail
from enhancer.backends.pool.messaging import (
    Alive,
    LoadFailed,
    PartFailed,
    Ready,
    TaskDone,
    WakeUpPipe,
    receive,
    send_task,
)
from enhancer.backends.pool.records import Task, Worker
from enhancer.backends.pool.scheduling import MAX_CHUNKS_PER_TASK, Scheduler
from enhancer.backends.pool.supervision import Supervisor
from enhancer.backends.pool.worker_process import (
    ArenaSpec,
    last_line,
    refuse_start_while_bootstrapping,
    worker_failure,
)
from enhancer.errors import EnhancerClosed, ModelError, PoolBroken
from enhancer.model.framing import Framing
from enhancer.model.grid import Job, segment_frames, stream_step_refusal
from enhancer.model.runner import FrameModel

__all__ = ["DEFAULT_HEARTBEAT_TIMEOUT_S", "DEFAULT_MIN_BLOCK_DEADLINE_S", "FILE_LANE_NICE",
           "MAX_CHUNKS_PER_TASK", "WorkerPool", "measure_speed",
           "refuse_start_while_bootstrapping"]

log = logging.getLogger("enhancer.pool")

WORKER_START_TIMEOUT_S = 60.0
DEFAULT_MIN_BLOCK_DEADLINE_S = 5.0  # the watchdog's floor (scheduling.DEADLINE_FACTOR)
# An idle worker that leaves its heartbeat unanswered this long is killed and replaced. Its
# answer takes microseconds of CPU; a loaded 2-core machine delays it by well under 0.1 s.
DEFAULT_HEARTBEAT_TIMEOUT_S = 3.0
# The file lanes' niceness: below the API process and the live lane, so on a busy machine a
# long file gets the CPU that live streams leave free. 0 turns it off.
FILE_LANE_NICE = 10


def measure_speed(runner: FrameModel, frames_per_block: int, context: int) -> float:
    """Seconds per frame of one block (and its context frames) through the model, after a
    warm-up run: the pool's first guess of the model's speed (``seconds_per_frame``)."""
    block = np.zeros((frames_per_block + context, runner.frame_length), np.float32)
    runner.run(block)
    started = time.perf_counter()
    runner.run(block)
    return (time.perf_counter() - started) / frames_per_block


class WorkerPool:
    """Run jobs, segment by segment, on ``num_processes`` spawned worker processes.

    Raises ``ModelError`` when the workers cannot load the model within
    ``WORKER_START_TIMEOUT_S``, or when it is started by a spawned process that is still
    importing its parent's script (the script lacks ``if __name__ == "__main__":``). A
    worker that dies is replaced; the session it held fails with ``WorkerCrashed``. One that
    holds a task past its deadline, or leaves a heartbeat unanswered for
    ``heartbeat_timeout_s`` while idle, is killed and replaced. Workers that keep dying at
    start-up break the pool: every queued and later session fails with ``PoolBroken``.
    """

    def __init__(self, model_path: str | Path, num_processes: int, num_threads: int,
                 framing: Framing, max_segment_frames: int, seconds_per_frame: float = 1e-3,
                 min_block_deadline_s: float = DEFAULT_MIN_BLOCK_DEADLINE_S,
                 file_lane_nice: int = FILE_LANE_NICE, step_model_path: str | Path | None = None,
                 state_size: int = 0,
                 heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S) -> None:
        refuse_start_while_bootstrapping()  # before any shared memory is made
        self.model_path = Path(model_path)
        # The model's stream step twin: streams' chunks then carry their state, not their
        # look-back's frames (enhancer.stream).
        self.step_model_path = None if step_model_path is None else Path(step_model_path)
        self.state_size = state_size if step_model_path is not None else 0
        self.runs_stream_steps = step_model_path is not None
        self.file_lane_nice = file_lane_nice
        self.num_processes = num_processes
        self.num_threads = num_threads
        self.framing = framing
        self.max_segment_frames = max_segment_frames
        self.min_block_deadline_s = min_block_deadline_s
        self.arena_prefix = f"enhancer-{os.getpid()}-{id(self):x}-"  # under /dev/shm
        self.unprocessed_frames_queue: queue.SimpleQueue[Session] = queue.SimpleQueue()
        self.frames_processed = 0
        self.tasks_sent = 0
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._scheduler = Scheduler(self.state_size, min_block_deadline_s, seconds_per_frame)
        self._supervisor = Supervisor(
            self.model_path, self.step_model_path, num_threads,
            ArenaSpec("", framing.frame_length, framing.hop_length, framing.window,
                      max_segment_frames, framing.context, self.state_size, MAX_CHUNKS_PER_TASK),
            self.arena_prefix, file_lane_nice, self._scheduler, heartbeat_timeout_s)
        self._broken_reason: str | None = None
        self._closed = False
        self._closing = False
        self._close_lock = threading.Lock()
        self._all_ready = threading.Event()
        self._wake_up = WakeUpPipe()
        for index in range(num_processes):
            self._supervisor.start(live_lane=index == 0)
        self._collector = threading.Thread(target=self._collect, name="enhancer-collector",
                                           daemon=True)
        self._collector.start()
        atexit.register(self.close)
        if not self._all_ready.wait(WORKER_START_TIMEOUT_S) or self._broken_reason:
            reason = self._broken_reason or (
                f"workers did not load {self.model_path} within {WORKER_START_TIMEOUT_S:.0f} s")
            self.close()
            raise ModelError(reason)

    # ----------------------------------------------------------------- the Backend interface

    def run(self, job: Job, session_id: str, progress: Progress | None = None,
            priority: Priority = Priority.FILE) -> Future[Job]:
        future: Future[Job] = Future()
        session = Session(session_id, job, future, progress, priority,
                          (self.max_segment_frames if priority == Priority.LIVE else
                           segment_frames(job, self.num_processes, self.max_segment_frames)))
        with self._pending_lock:
            self._pending += 1
        future.add_done_callback(self._session_done)
        refusal = stream_step_refusal(job, self.runs_stream_steps, self.max_segment_frames)
        if refusal is not None:
            future.set_exception(ValueError(refusal))
            return future
        # Under the close lock, so a session is never queued after the collector's last look.
        with self._close_lock:
            if self._closed:
                future.set_exception(EnhancerClosed("the enhancer is closed"))
            elif self._broken_reason is not None:
                future.set_exception(PoolBroken(self._broken_reason))
            else:
                self.unprocessed_frames_queue.put(session)
                self._wake_up.wake()
        return future

    @property
    def is_ready(self) -> bool:
        return (not self._closed and self._broken_reason is None
                and self._collector.is_alive()
                and all(w.ready and not w.hung and w.process.is_alive()
                        for w in list(self._workers)))

    @property
    def pending_sessions(self) -> int:
        """Sessions queued or running (0 when idle: nothing is left behind)."""
        return self._pending

    def _session_done(self, _: Future[Job]) -> None:
        with self._pending_lock:
            self._pending -= 1

    @property
    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in list(self._workers) if w.process.pid]

    @property
    def restarts(self) -> int:
        """Workers replaced after dying."""
        return self._supervisor.restarts

    @property
    def hung_workers(self) -> int:
        """Workers the watchdog killed: for holding a task past its deadline, or for leaving
        a heartbeat unanswered."""
        return self._supervisor.hung_workers

    @property
    def _workers(self) -> list[Worker]:
        """The current workers (the collector's own list)."""
        return self._supervisor.workers

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._closing = True
        self._wake_up.wake()
        self._collector.join()
        self._wake_up.close()

    # ----------------------------------------------------------------- the collector thread

    def _collect(self) -> None:
        """Dispatch tasks, gather processed frames, replace dead workers; until closed."""
        try:
            while not self._closing:
                by_conn = {w.conn: w for w in self._workers}
                by_sentinel = {w.process.sentinel: w for w in self._workers}
                # Wake for the next task's deadline or heartbeat too: that is the watchdog.
                for ready in wait([self._wake_up.reader, *by_conn, *by_sentinel],
                                  self._supervisor.time_to_next_check()):
                    if ready == self._wake_up.reader:
                        self._wake_up.drain()
                    elif ready in by_conn:
                        self._receive(by_conn[ready])
                    elif ready in by_sentinel:
                        self._replace(by_sentinel[ready])
                self._supervisor.kill_hung_workers()
                for worker in self._supervisor.send_heartbeats():
                    self._replace(worker)
                self._accept_sessions()
                self._dispatch()
        except Exception as exc:
            log.exception("the enhancer's collector thread failed")
            self._mark_broken(f"the worker pool's collector thread failed: "
                              f"{type(exc).__name__}: {exc}")
        finally:
            self._supervisor.stop_all()
            self._all_ready.set()
            self._fail_queued(EnhancerClosed, "the enhancer was closed")

    def _mark_broken(self, reason: str) -> None:
        """The one way into the broken state: every queued and later session fails."""
        self._broken_reason = self._broken_reason or reason
        self._all_ready.set()
        self._fail_queued(PoolBroken, self._broken_reason)

    def _fail_queued(self, error_type: type[Exception], message: str) -> None:
        """Fail every session not yet finished, each with an exception of its own."""
        self._accept_sessions()
        for session in [*self._scheduler.drop_waiting(), *self._supervisor.held_sessions()]:
            fail(session.future, error_type(message))

    def _accept_sessions(self) -> None:
        """Take every session off the unprocessed frames queue, into the scheduler's turns."""
        while True:
            try:
                session = self.unprocessed_frames_queue.get_nowait()
            except queue.Empty:
                return
            if self._broken_reason is not None:
                fail(session.future, PoolBroken(self._broken_reason))
            else:
                self._scheduler.accept(session)

    def _dispatch(self) -> None:
        """Send each idle worker its next task, as the scheduler cuts them."""
        for worker, task in self._scheduler.tasks(self._workers):
            worker.task = task
            self.tasks_sent += 1
            if not send_task(worker, task):
                self._replace(worker)

    def _receive(self, worker: Worker) -> None:
        """A worker's message: it is ready, it cannot load the model, or its task is done
        (the processed frames already in their sessions' jobs) or has failed."""
        try:
            reply = receive(worker, self.state_size)
        except (EOFError, OSError, TypeError, ValueError):
            self._replace(worker)
            return
        match reply:
            case Alive():
                pass
            case Ready():
                if self._supervisor.came_up(worker):
                    self._all_ready.set()
            case LoadFailed(remote):
                self._mark_broken(f"workers cannot load {self.model_path}: {last_line(remote)}")
            case PartFailed(task, failed, remote):
                fail(failed.session.future, worker_failure(
                    f"the model failed: {last_line(remote)}", remote))
                for part in task.parts:  # the chunks taken with it are fine: run them again
                    if part is not failed:
                        self._scheduler.run_again(part)
            case TaskDone(task):
                self._finish(task)

    def _finish(self, task: Task) -> None:
        """A task's processed frames are in: a session with all of its in is done."""
        self._scheduler.measured(task)
        self.frames_processed += task.count
        for part in task.parts:
            session = part.session
            if not session.future.done() and session.count_done(part.count):
                # The caller joins where segments meet: the collector does nothing that can
                # fail for one request. The caller may have cancelled meanwhile.
                with contextlib.suppress(InvalidStateError):
                    session.future.set_result(session.job)

    def _replace(self, worker: Worker) -> None:
        """A worker died: the supervisor settles what it held and starts another."""
        broken = self._supervisor.replace(worker, self._closing)
        if broken is not None:
            self._mark_broken(broken)

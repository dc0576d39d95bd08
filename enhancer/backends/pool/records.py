"""The pool's typed work records: a session, a task and its parts, a worker and its arena.

Owned by the collector thread of :mod:`enhancer.backends.pool.pool`; nothing here does any work.

Shared memory is made and unlinked by the pool's process only. Arenas are unlinked when the
pool closes; a dead worker's arena is handed to its replacement; if the pool's process itself
is killed, multiprocessing's resource tracker unlinks them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from enhancer.backends.base import Priority, Session
from enhancer.backends.pool.worker_process import ArenaSpec, Header, MessageKind, worker_main
from enhancer.model.grid import ChannelJob

log = logging.getLogger("enhancer.pool")


@dataclass(eq=False)
class Part:
    """One segment of a task: ``count`` frames of one channel of a session's job."""

    session: Session
    first_frame: int  # in the job
    count: int
    channel: ChannelJob
    channel_first: int  # the same frame, in its channel
    result_at: int  # where its result starts in the arena's output half
    input_size: int  # floats it takes in the arena's input half
    result_size: int  # and in its output half (a stream step's state included)
    kind: int  # how the worker runs it: worker_process.PLAIN, or a stream step's context


@dataclass(eq=False)
class Task:
    """What one worker holds until its result comes back: a file's segment, or several
    streams' chunks taken together."""

    task_id: int
    parts: list[Part]
    sent_at: float
    deadline: float

    @property
    def count(self) -> int:
        """Frames in all."""
        return sum(part.count for part in self.parts)

    @property
    def sessions(self) -> list[Session]:
        return [part.session for part in self.parts]


@dataclass(eq=False)
class Arena:
    """A worker's shared memory and its two halves as arrays."""

    memory: SharedMemory
    samples: np.ndarray
    result: np.ndarray

    @classmethod
    def create(cls, spec: ArenaSpec) -> Arena:
        """A new arena laid out as ``spec`` says."""
        memory = SharedMemory(spec.name, create=True, size=spec.size)
        assert memory.buf is not None
        return cls(memory, *spec.views(memory.buf))

    def unlink(self) -> None:
        del self.samples, self.result  # no array may use the memory when it is closed
        self.memory.close()
        with contextlib.suppress(FileNotFoundError):
            self.memory.unlink()


@dataclass(eq=False)
class Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    arena: Arena
    live_lane: bool  # the worker live chunks go to first; file lanes run at lower priority
    ready: bool = False
    task: Task | None = None
    hung: bool = False  # killed by the watchdog: its segment is run again once

    @classmethod
    def start(cls, context: multiprocessing.context.SpawnContext, model_path: str,
              num_threads: int, spec: ArenaSpec, arena: Arena, live_lane: bool,
              file_lane_nice: int, step_model_path: str | None = None) -> Worker:
        """Spawn a worker process on ``arena``; it says READY once its model is loaded."""
        parent_conn, child_conn = context.Pipe(duplex=True)
        nice = 0 if live_lane else file_lane_nice
        process = context.Process(target=worker_main, name="enhancer-worker", daemon=True,
                                  args=(child_conn, model_path, num_threads, spec, nice,
                                        step_model_path))
        process.start()
        # Only the worker may hold its end, so that its exit shows here as end-of-file.
        child_conn.close()
        return cls(process, parent_conn, arena, live_lane)

    def send_stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send_bytes(Header(MessageKind.STOP).pack())

    def stop(self, timeout: float) -> None:
        """Wait ``timeout`` for the process to end, kill it if it has not; free its arena."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.arena.unlink()


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def time_to_next_deadline(workers: list[Worker]) -> float | None:
    """Seconds until the first held segment's deadline; None when no worker holds one."""
    deadlines = [w.task.deadline for w in workers if w.task is not None]
    return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None


def overdue(workers: list[Worker]) -> list[tuple[Worker, Task]]:
    """The workers past their segment's deadline, not yet killed for it, and the segment."""
    now = time.monotonic()
    return [(w, w.task) for w in workers
            if w.task is not None and now > w.task.deadline and not w.hung]


# Within this long of a live chunk, file segments are cut to this many frames.
LIVE_RECENT_S, FILE_FRAMES_WHILE_LIVE = 1.0, 32


def segment_limit(session: Session, last_live: float) -> int:
    """While streams are live, file segments are short, so a chunk never waits long for a
    worker to come free."""
    if session.priority == Priority.FILE and time.monotonic() - last_live < LIVE_RECENT_S:
        return min(session.segment_frames, FILE_FRAMES_WHILE_LIVE)
    return session.segment_frames


def pick_worker(idle: list[Worker], priority: Priority, workers: int,
                last_live: float) -> Worker | None:
    """The idle worker a segment of ``priority`` goes to, or None if it must wait.

    One worker is the *live lane*: a stream's chunk goes there first, and while streams are
    live no file segment does (with two or more workers), so a chunk never waits behind a
    file. The others are *file lanes*, run at a lower CPU priority (``nice``), so on a busy
    machine a long file takes the cores the live lane, the API and its clients leave free.
    """
    if priority == Priority.LIVE:
        return next((w for w in idle if w.live_lane), idle[0] if idle else None)
    file_lane = next((w for w in idle if not w.live_lane), None)
    if file_lane is not None:
        return file_lane
    recent = time.monotonic() - last_live < LIVE_RECENT_S
    return idle[0] if idle and (not recent or workers < 2) else None


def next_session(round_robin: dict[Priority, deque[Session]]) -> Session | None:
    """The next session with work, live ones first; cancelled or failed ones are dropped."""
    for waiting in round_robin.values():  # in priority order
        while waiting:
            session = waiting.popleft()
            if not session.future.done():
                return session
    return None

"""The pool's typed work records: a task and its parts, a worker and its arena.

Owned by the collector thread of :mod:`enhancer.backends.pool.pool`; the work on them is
:mod:`~enhancer.backends.pool.scheduling`'s and :mod:`~enhancer.backends.pool.supervision`'s.

Shared memory is made and unlinked by the pool's process only. Arenas are unlinked when the
pool closes; a dead worker's arena is handed to its replacement; if the pool's process itself
is killed, multiprocessing's resource tracker unlinks them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from enhancer.backends.base import Session
from enhancer.backends.pool.worker_process import (
    WORKER_NAME,
    ArenaSpec,
    Header,
    MessageKind,
    worker_main,
)
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
    background: bool = False  # a job's: run at the idle scheduling class

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
    hung: bool = False  # killed by the watchdog or the heartbeat: its segment runs again once
    hung_how: str = ""  # why it was killed, in words
    last_heard: float = field(default_factory=time.monotonic)  # its last message's arrival
    ping_sent_at: float | None = None  # a heartbeat it has not answered yet

    @classmethod
    def start(cls, context: multiprocessing.context.SpawnContext, model_path: str,
              num_threads: int, spec: ArenaSpec, arena: Arena, live_lane: bool,
              file_lane_nice: int, step_model_path: str | None = None) -> Worker:
        """Spawn a worker process on ``arena``; it says READY once its model is loaded."""
        parent_conn, child_conn = context.Pipe(duplex=True)
        nice = 0 if live_lane else file_lane_nice
        process = context.Process(target=worker_main, name=WORKER_NAME, daemon=True,
                                  args=(child_conn, model_path, num_threads, spec, nice,
                                        step_model_path))
        process.start()
        # Only the worker may hold its end, so that its exit shows here as end-of-file.
        child_conn.close()
        return cls(process, parent_conn, arena, live_lane)

    def send_stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send_bytes(Header(MessageKind.STOP).pack())

    def send_ping(self, now: float) -> bool:
        """Send a heartbeat; False if the pipe is broken (the worker must be replaced)."""
        try:
            self.conn.send_bytes(Header(MessageKind.PING).pack())
        except OSError:
            return False
        self.ping_sent_at = now
        return True

    def kill(self, how: str) -> None:
        """Kill a worker that hangs; its sentinel then fires and it is replaced."""
        self.hung = True
        self.hung_how = how
        self.process.kill()

    def stop(self, timeout: float) -> None:
        """Wait ``timeout`` for the process to end, kill it if it has not; free its arena."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.arena.unlink()

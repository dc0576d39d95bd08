"""Messaging: the pipes the collector waits on, and what comes through them.

- The *wake-up pipe* (:class:`WakeUpPipe`): a caller that puts a session on the *unprocessed
  frames queue* writes one byte, so the collector, waiting on every pipe at once, takes it.
- One duplex pipe per worker: a TASK goes out (:func:`send_task`); READY, RESULT or FAILED
  comes back (:func:`receive`); an idle worker answers a heartbeat, PING, with PONG. The
  pipe carries only headers (the wire is :mod:`enhancer.backends.pool.worker_process`'s);
  the *processed frames* come through the worker's arena and go straight into their
  sessions' jobs.

Owned by the collector thread, except :meth:`WakeUpPipe.wake`, which callers use.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

from enhancer.backends.pool.records import Part, Task, Worker
from enhancer.backends.pool.worker_process import PLAIN, Header, MessageKind, task_message


class WakeUpPipe:
    """The callers' way to wake the collector: a non-blocking pipe it waits on."""

    def __init__(self) -> None:
        self.reader, self._writer = os.pipe()
        self._due = False
        for end in (self.reader, self._writer):
            os.set_blocking(end, False)

    def wake(self) -> None:
        # One byte until the collector reads it: it then takes every session queued so far.
        if self._due:
            return
        self._due = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._writer, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.reader, 4096):
                pass
        # After reading, not before: a byte written meanwhile may have been read above, and
        # the sessions queued before it are taken next, from the unprocessed frames queue.
        self._due = False

    def close(self) -> None:
        os.close(self.reader)
        os.close(self._writer)


def send_task(worker: Worker, task: Task) -> bool:
    """Send ``task`` (its samples already in the arena) to ``worker``; False if its pipe is
    broken: the worker is dead and must be replaced."""
    try:
        worker.conn.send_bytes(task_message(task.task_id, [p.count for p in task.parts],
                                            [p.kind for p in task.parts], task.background))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Ready:
    """The worker has loaded its model and waits for tasks."""


@dataclass(frozen=True)
class Alive:
    """The worker answered its heartbeat."""


@dataclass(frozen=True)
class LoadFailed:
    """The worker could not load its model."""

    remote: str  # its traceback


@dataclass(frozen=True)
class PartFailed:
    """The model failed on one part of the worker's task; the other parts are unrun."""

    task: Task
    failed: Part
    remote: str  # the worker's traceback


@dataclass(frozen=True)
class TaskDone:
    """Every part of the task ran; their results are stored in their sessions' jobs."""

    task: Task


Reply = Ready | Alive | LoadFailed | PartFailed | TaskDone


def receive(worker: Worker, state_size: int) -> Reply:
    """Read ``worker``'s next message; a task it answers is no longer the worker's.

    Raises ``EOFError``, ``OSError``, ``TypeError`` or ``ValueError`` when the pipe has
    broken or the message is out of step: the worker must then be replaced.
    """
    header = Header.unpack(worker.conn.recv_bytes())
    worker.last_heard = time.monotonic()
    if header.kind == MessageKind.READY:
        return Ready()
    if header.kind == MessageKind.PONG:
        worker.ping_sent_at = None
        return Alive()
    if header.kind == MessageKind.FAILED and not worker.ready:
        return LoadFailed(_remote_traceback(worker))
    task = worker.task
    if (task is None or header.task_id != task.task_id
            or (header.kind == MessageKind.RESULT and header.count != task.count)
            or (header.kind == MessageKind.FAILED and header.count >= len(task.parts))):
        raise EOFError("out-of-step message")
    worker.task = None
    if header.kind == MessageKind.FAILED:
        return PartFailed(task, task.parts[header.count], _remote_traceback(worker))
    _store_results(task, worker, state_size)
    return TaskDone(task)


def _remote_traceback(worker: Worker) -> str:
    return worker.conn.recv_bytes().decode(errors="replace")


def _store_results(task: Task, worker: Worker, state_size: int) -> None:
    """The processed frames, straight from the arena into their sessions' jobs; a stream
    step's state after them into its channel."""
    for part in task.parts:
        if not part.session.future.done():  # else cancelled or failed: dropped
            part.channel.store(part.channel_first, part.count,
                               worker.arena.result[part.result_at:])
            if part.kind != PLAIN:
                end = part.result_at + part.result_size
                part.channel.state_out = worker.arena.result[end - state_size:end].copy()

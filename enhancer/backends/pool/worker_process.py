"""A worker process of the pool and the wire protocol it speaks with the collector.

Each worker holds one LiteRT interpreter, one duplex pipe to the parent and one shared-memory
*arena*, made by the parent and reused for every task: the parent writes a task's segments'
samples into the arena's input half, one after another; the worker frames, windows, runs and
overlap-adds each (:func:`process_audio`) and writes the results into the output half, in the
same order. The pipe carries only fixed headers (:data:`HEADER`: kind, task id, count), a
TASK's segment sizes and, on failure, a traceback::

    parent → worker   TASK   task id, frames in all  payload: each segment's frame count,
                                                     then how each is run (:data:`PLAIN`,
                                                     or a stream step's context frames)
                      BACKGROUND_TASK                the same, for a job's segment
                                                     while streams are live
                      STOP   -                       -
                      PING   -                       -   (an idle worker's heartbeat)
    worker → parent   READY  -, frame length         -
                      RESULT task id, frames in all  (the results are in the arena)
                      FAILED task id (0: at load),   payload: the worker's traceback, UTF-8
                             the segment that failed
                      PONG   -                       -   (the heartbeat's answer)

A task is one segment of a file, or several streams' chunks taken together when chunks queue
up (one wake-up and one round trip for all of them). A stream's chunk run by the model's
stream step twin has the stream's state in front of its samples, and the state after it
behind its result::

    input half    [state | samples] of a step segment, [samples] of a plain one, ...
    output half   [result | state]                     [result]                  ...

While streams are live, a job's segment (``BACKGROUND_TASK``) runs on a thread of the worker's
at the idle scheduling class (``SCHED_IDLE``, :class:`IdleThread`): it takes only the CPU time
nothing else wants, and a woken live lane, API process or client preempts it at once. A lower
niceness is not enough: the scheduler may let a running task finish its time slice before a
woken one of higher priority runs, which added about 2 ms to live streams' p99 beside a job
(docs/research-log.md). With no stream live, a job's segment runs as a file's, so that other
work on the machine cannot starve it.

A spawned worker imports the caller's main script again; a script that starts an enhancer
at its top level would start pools in every worker. :func:`refuse_start_while_bootstrapping`
stops that at once: a worker of ours then exits with ``BOOTSTRAP_EXIT_STATUS``, which the
parent turns into :data:`GUARD_ADVICE`.

This module imports only numpy and the model runner, so a spawned worker stays small.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import queue
import signal
import struct
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from enhancer.errors import ModelError
from enhancer.model.framing import Framing
from enhancer.model.grid import input_length, result_length, run_segment, run_stream_step
from enhancer.model.loading import load_runners
from enhancer.model.runner import FrameModel, StepModel

HEADER = struct.Struct("<BQI")
SEGMENT_COUNTS = "<u4"  # a TASK's payload: the frame count of each of its segments,
SEGMENT_KINDS = "<i4"  # then how each is run:
PLAIN = -1  # with its look-back frames, by the model; else by its stream step twin, after
# that many frames of look-back (a stream's first chunk; 0 after it)


class MessageKind(IntEnum):
    TASK = 0
    STOP = 1
    READY = 2
    RESULT = 3
    FAILED = 4
    PING = 5
    PONG = 6
    BACKGROUND_TASK = 7


WORKER_NAME = "enhancer-worker"  # the pool's processes' name, known to them while they start
# A worker that found itself starting an enhancer while it imported the caller's script exits
# with this status (sysexits' EX_CONFIG), and nothing on stderr: the parent says why, once.
BOOTSTRAP_EXIT_STATUS = 78
GUARD_ADVICE = ("the enhancer was started while its script was being imported again by a "
                "spawned worker process: put the code that starts it under "
                "`if __name__ == \"__main__\":`")


def refuse_start_while_bootstrapping() -> None:
    """Refuse to start worker processes from a process that is still starting itself.

    A spawned process imports the parent's main script before it runs (CPython's
    ``multiprocessing.spawn``, whose own check comes only after an enhancer has made its
    shared memory). In one of our workers this exits quietly with ``BOOTSTRAP_EXIT_STATUS``;
    in anyone else's child it raises ``ModelError`` with the advice.
    """
    process = multiprocessing.current_process()
    if not getattr(process, "_inheriting", False):
        return
    if process.name == WORKER_NAME:
        raise SystemExit(BOOTSTRAP_EXIT_STATUS)
    raise ModelError(GUARD_ADVICE)


@dataclass(frozen=True)
class Header:
    """One message header: its kind, the task it is about and a frame count."""

    kind: MessageKind
    task_id: int = 0
    count: int = 0

    def pack(self) -> bytes:
        return HEADER.pack(self.kind, self.task_id, self.count)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        kind, task_id, count = HEADER.unpack_from(data)
        return cls(MessageKind(kind), task_id, count)


def task_message(task_id: int, counts: list[int], kinds: list[int] | None = None,
                 background: bool = False) -> bytes:
    """A TASK (or BACKGROUND_TASK) header, its segments' frame counts and how each is run,
    as one message."""
    kinds = [PLAIN] * len(counts) if kinds is None else kinds
    kind = MessageKind.BACKGROUND_TASK if background else MessageKind.TASK
    return (Header(kind, task_id, sum(counts)).pack()
            + np.asarray(counts, SEGMENT_COUNTS).tobytes()
            + np.asarray(kinds, SEGMENT_KINDS).tobytes())


def segment_counts(message: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The segments' frame counts of a TASK message, and how each is run."""
    parts = (len(message) - HEADER.size) // 8
    return (np.frombuffer(message, SEGMENT_COUNTS, parts, HEADER.size),
            np.frombuffer(message, SEGMENT_KINDS, parts, HEADER.size + 4 * parts))


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text (set as ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def worker_failure(message: str, remote_traceback: str) -> ModelError:
    """A ``ModelError`` for the caller whose cause carries the worker's traceback."""
    error = ModelError(message)
    error.__cause__ = RemoteTraceback(remote_traceback)
    return error


def last_line(remote_traceback: str) -> str:
    """The ``Type: message`` line a traceback ends with."""
    lines = remote_traceback.strip().splitlines()
    return lines[-1] if lines else "unknown error"


def process_audio(runner: FrameModel, framing: Framing, samples: np.ndarray, count: int,
                  out: np.ndarray) -> None:
    """Run the model on one segment of unprocessed frames, given as ``samples``; write the
    processed frames, windowed and overlap-added (:func:`enhancer.model.grid.run_segment`),
    into ``out``."""
    run_segment(runner.run, framing, samples, count, out)


class SegmentFailed(Exception):
    """The model failed on one segment of a task (its index), with the original as cause."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class StreamSteps:
    """A worker's stream step twin of its model, and the framings its chunks come in."""

    def __init__(self, runner: StepModel, framing: Framing) -> None:
        self.runner = runner
        self.state_size = runner.state_size
        self._framings = {context: framing.with_context(context)
                          for context in {0, framing.context}}

    def framing(self, context: int) -> Framing:
        return self._framings[context]


class IdleThread:
    """One thread at the idle scheduling class that runs what it is given while the caller
    waits: the worker's background tasks. Where the OS has no ``SCHED_IDLE`` it runs them at
    the worker's own priority."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="background", daemon=True).start()

    def run(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the thread; return when it has, raising what it raised."""
        self._calls.put(call)
        error = self._done.get()
        if error is not None:
            raise error

    def _serve(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # pid 0: this thread only
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        while True:
            call = self._calls.get()
            outcome: BaseException | None = None
            try:
                call()
            except BaseException as exc:
                outcome = exc
            del call  # nothing here may keep the arena's arrays once the task is done
            self._done.put(outcome)
            del outcome


def process_task(runner: FrameModel, framing: Framing, samples: np.ndarray,
                 counts: np.ndarray, out: np.ndarray, kinds: np.ndarray | None = None,
                 steps: StreamSteps | None = None) -> None:
    """Run each segment of a task, laid out one after another in ``samples`` and, as
    results, in ``out``: :func:`process_audio`, or a stream chunk's step (``kinds``)."""
    taken = written = 0
    kinds_list = [PLAIN] * len(counts) if kinds is None else kinds.tolist()
    for index, (count, kind) in enumerate(zip(counts.tolist(), kinds_list, strict=True)):
        try:
            if kind == PLAIN:
                process_audio(runner, framing, samples[taken:], count, out[written:])
                taken += input_length(framing, count)
                written += result_length(framing, count)
                continue
            if steps is None:
                raise ModelError("a stream step segment, but the model has no stream step")
            size, chunk_framing = steps.state_size, steps.framing(kind)
            result = result_length(chunk_framing, count)
            run_stream_step(steps.runner.run, chunk_framing, samples[taken + size:], count,
                            out[written:], samples[taken:taken + size],
                            out[written + result:written + result + size])
            taken += size + input_length(chunk_framing, count)
            written += result + size
        except Exception as exc:
            raise SegmentFailed(index) from exc


@dataclass(frozen=True)
class ArenaSpec:
    """Where a worker's arena is and how it is laid out: the input half holds a segment of
    up to ``max_frames`` frames as samples, the output half its result."""

    name: str
    frame_length: int
    hop_length: int
    window: str
    max_frames: int
    context: int = 0
    state_size: int = 0  # a stream step's state, in front of its samples and behind its result
    states: int = 1  # room for this many states besides the frames (a task's stream chunks)

    @property
    def framing(self) -> Framing:
        return Framing(self.frame_length, self.hop_length, self.window, self.context)

    @property
    def input_floats(self) -> int:
        return input_length(self.framing, self.max_frames) + self.state_size * self.states

    @property
    def output_floats(self) -> int:
        return result_length(self.framing, self.max_frames) + self.state_size * self.states

    @property
    def size(self) -> int:
        return 4 * (self.input_floats + self.output_floats)

    def views(self, buffer: memoryview) -> tuple[np.ndarray, np.ndarray]:
        """The input and output halves of the arena, as float32 arrays."""
        arena = np.ndarray(self.input_floats + self.output_floats, np.float32, buffer=buffer)
        return arena[:self.input_floats], arena[self.input_floats:]


def worker_main(conn: Connection, model_path: str, num_threads: int, spec: ArenaSpec,
                nice: int = 0, step_model_path: str | None = None) -> None:
    """Worker process: load the model (and its stream step twin, if any), then run each
    segment the parent puts in the arena; at ``nice`` more than the parent's niceness (a
    file lane's lower CPU priority)."""
    from multiprocessing.shared_memory import SharedMemory

    if nice:
        os.nice(nice)
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner, step = load_runners(model_path, step_model_path, spec.frame_length,
                                    spec.state_size, num_threads)
        if runner.frame_length != spec.frame_length:
            raise ModelError(f"model {model_path} has frame {runner.frame_length}, the pool "
                             f"expects {spec.frame_length}")
        steps = None if step is None else StreamSteps(step, spec.framing)
        arena = SharedMemory(spec.name)
    except (ModelError, OSError):
        conn.send_bytes(Header(MessageKind.FAILED).pack())
        conn.send_bytes(traceback.format_exc().encode())
        return
    try:
        _serve(conn, runner, spec, arena, steps)
    finally:
        arena.close()


def _serve(conn: Connection, runner: FrameModel, spec: ArenaSpec, arena: Any,
           steps: StreamSteps | None) -> None:
    framing = spec.framing
    samples, out = spec.views(arena.buf)
    conn.send_bytes(Header(MessageKind.READY, 0, runner.frame_length).pack())
    background: IdleThread | None = None
    try:
        while True:
            message = conn.recv_bytes()
            header = Header.unpack(message)
            if header.kind == MessageKind.STOP:
                return
            if header.kind == MessageKind.PING:
                conn.send_bytes(Header(MessageKind.PONG).pack())
                continue
            try:
                counts, kinds = segment_counts(message)
                task = functools.partial(process_task, runner, framing, samples, counts, out,
                                         kinds, steps)
                if header.kind == MessageKind.BACKGROUND_TASK:
                    background = background or IdleThread()
                    background.run(task)
                else:
                    task()
            except SegmentFailed as failed:  # the model failed on this input: report, serve on
                conn.send_bytes(Header(MessageKind.FAILED, header.task_id, failed.index).pack())
                cause = failed.__cause__ or failed
                conn.send_bytes("".join(traceback.format_exception(cause)).encode())
                continue
            conn.send_bytes(Header(MessageKind.RESULT, header.task_id, header.count).pack())
    except (EOFError, OSError):
        return  # the parent is gone: never outlive it
    finally:
        del samples, out  # the arena can only be closed once no array uses it

"""A worker process of the pool and the wire protocol it speaks with the collector.

Each worker holds one LiteRT interpreter and one duplex pipe to the parent. Every message is
a fixed header (:data:`HEADER`: kind, task id, count) followed, for some kinds, by one payload::

    parent → worker   TASK   task id, frame count   payload: the frames, float32 bytes
                      STOP   -                      -
    worker → parent   READY  -, frame length        -
                      RESULT task id, frame count   payload: the processed frames
                      FAILED task id (0: at load)   payload: the worker's traceback, UTF-8

This module imports only numpy and the model runner, so a spawned worker stays small.
"""

from __future__ import annotations

import signal
import struct
import traceback
from dataclasses import dataclass
from enum import IntEnum
from multiprocessing.connection import Connection

import numpy as np

from enhancer.errors import ModelError
from enhancer.model_runner import ModelRunner

HEADER = struct.Struct("<BQI")


class MessageKind(IntEnum):
    TASK = 0
    STOP = 1
    READY = 2
    RESULT = 3
    FAILED = 4


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
        kind, task_id, count = HEADER.unpack(data)
        return cls(MessageKind(kind), task_id, count)


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


def process_audio(runner: ModelRunner, frames: np.ndarray) -> np.ndarray:
    """Run the model on one block of unprocessed frames; return the processed frames."""
    return runner.run(frames)


def worker_main(conn: Connection, model_path: str, num_threads: int) -> None:
    """Worker process: load the model, then run each block of frames the parent sends."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = ModelRunner(model_path, num_threads)
    except ModelError:
        conn.send_bytes(Header(MessageKind.FAILED).pack())
        conn.send_bytes(traceback.format_exc().encode())
        return
    frame_length = runner.frame_length
    conn.send_bytes(Header(MessageKind.READY, 0, frame_length).pack())
    while True:
        try:
            header = Header.unpack(conn.recv_bytes())
            if header.kind == MessageKind.STOP:
                return
            frames = np.frombuffer(conn.recv_bytes(), dtype=np.float32).reshape(
                header.count, frame_length)
            try:
                processed = process_audio(runner, frames)
            except Exception:  # the model failed on this input: report, keep serving
                conn.send_bytes(Header(MessageKind.FAILED, header.task_id).pack())
                conn.send_bytes(traceback.format_exc().encode())
                continue
            conn.send_bytes(Header(MessageKind.RESULT, header.task_id, header.count).pack())
            conn.send_bytes(processed.data)
        except (EOFError, OSError):
            return  # the parent is gone: never outlive it

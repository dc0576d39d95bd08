"""Enhance audio with a TFLite model on a pool of worker processes, and the command line.

``AudioEnhancer`` owns the pool: one LiteRT interpreter per worker process, a queue of
unprocessed frames, and a collector thread that reassembles each session's processed frames
and completes that session's future. Run as a script, this module is the CLI::

    python enhance_file.py --source-file audio_samples/speech_48000.f32 --destination-file out.raw
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import itertools
import logging
import math
import multiprocessing
import os
import queue
import signal
import struct
import sys
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np

from audio_manipulations import (
    RAW_FORMATS,
    DecodedAudio,
    check_sample_rate,
    check_samples,
    convert_to_required_format,
    decode_audio,
    encode_audio,
    fit_length,
)
from errors import EnhancerClosed, EnhancerError, InvalidAudio, ModelError, WorkerCrashed
from framing import FrameSource, WindowedFrames
from model_card import framing_for, load_card
from model_runner import ModelRunner

log = logging.getLogger("enhancer")

# Samples per queue message: big enough that the pipe and wake-up costs vanish, small enough
# that a long request is spread over every worker and interleaved with short ones.
BLOCK_SAMPLES = 32 * 1024
WORKER_START_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 5.0
MAX_FAILED_STARTS = 3

# One message header: kind, task id, frame count (or, for READY, the frame length).
_HEADER = struct.Struct("<BQI")
_TASK, _STOP, _READY, _RESULT, _ERROR = range(5)

Progress = Callable[[int], None]


def _worker_main(conn: Connection, model_path: str, num_threads: int) -> None:
    """Worker process: load the model, then run each block of frames the parent sends."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = ModelRunner(model_path, num_threads)
    except ModelError as exc:
        conn.send_bytes(_HEADER.pack(_ERROR, 0, 0))
        conn.send_bytes(str(exc).encode())
        return
    frame_length = runner.frame_length
    conn.send_bytes(_HEADER.pack(_READY, 0, frame_length))
    while True:
        try:
            kind, task_id, count = _HEADER.unpack(conn.recv_bytes())
            if kind == _STOP:
                return
            frames = np.frombuffer(conn.recv_bytes(), dtype=np.float32).reshape(count, frame_length)
            try:
                result = runner.run(frames)
            except Exception as exc:  # the model failed on this input: report, keep serving
                conn.send_bytes(_HEADER.pack(_ERROR, task_id, 0))
                conn.send_bytes(f"the model failed: {exc}".encode())
                continue
            conn.send_bytes(_HEADER.pack(_RESULT, task_id, count))
            conn.send_bytes(result)
        except (EOFError, OSError):
            return  # the parent is gone: never outlive it


@dataclass(eq=False)
class _Session:
    session_id: str
    frames: FrameSource | WindowedFrames
    output: np.ndarray
    future: Future
    progress: Progress | None
    next_frame: int = 0
    frames_done: int = 0


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    task: tuple[int, _Session, int, int] | None = None  # task id, session, first frame, count


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class AudioEnhancer:
    """Run a TFLite model over audio on a pool of worker processes.

    Parameters
    ----------
    model_path : str or Path
        A ``.tflite`` model with input ``[batch, frame, 1]`` float32; the frame length is read
        from it.
    num_processes : int, optional
        Worker processes (default: one per core). 0 runs the model inline, in the calling
        process, which is simplest to debug.
    num_threads : int
        Interpreter threads in each worker.
    model_sample_rate : int
        The rate the model runs at, if it has no model card (a card's rate wins);
        :meth:`enhance` resamples to it and back. A card beside the model (same name,
        ``.json``) also gives its hop and window: see ``model_card.py``.
    frames_per_block : int, optional
        Frames per queue message (default: about ``BLOCK_SAMPLES`` samples' worth).

    Use it as a context manager, or call :meth:`close`; workers are also stopped when the
    parent exits, and exit by themselves if the parent dies.
    """

    def __init__(self, model_path: str | Path, num_processes: int | None = None,
                 num_threads: int = 1, model_sample_rate: int = 48000,
                 frames_per_block: int | None = None) -> None:
        if num_processes is None:
            num_processes = os.cpu_count() or 1
        if isinstance(num_processes, bool) or not isinstance(num_processes, int):
            raise TypeError(f"num_processes must be an int, got {type(num_processes).__name__}")
        if num_processes < 0:
            raise ValueError(f"num_processes must be 0 or more, got {num_processes}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        self.model_path = Path(model_path)
        self.num_processes = num_processes
        self.num_threads = num_threads
        check_sample_rate(model_sample_rate, "model_sample_rate")

        # Loading the model here refuses a bad one before any worker starts.
        runner = ModelRunner(self.model_path, num_threads)
        self.frame_length = runner.frame_length
        self.card = load_card(self.model_path, model_sample_rate)
        self.framing = framing_for(self.card, self.frame_length)
        self.model_sample_rate = self.card.sample_rate
        if frames_per_block is None:
            frames_per_block = max(1, BLOCK_SAMPLES // self.frame_length)
        if frames_per_block < 1:
            raise ValueError(f"frames_per_block must be positive, got {frames_per_block}")
        self.frames_per_block = frames_per_block

        self.unprocessed_frames_queue: queue.SimpleQueue[_Session] = queue.SimpleQueue()
        self.frames_processed = 0
        self.worker_restarts = 0
        self._active_ids: set[str] = set()
        self._ids_lock = threading.Lock()
        self._closed = False
        self._close_lock = threading.Lock()

        if num_processes == 0:
            self._runner: ModelRunner | None = runner
            self._inline_lock = threading.Lock()
            return
        self._runner = None
        del runner

        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._round_robin: deque[_Session] = deque()
        self._task_ids = itertools.count(1)
        self._failed_starts = 0
        self._broken: EnhancerError | None = None
        self._closing = False
        self._all_ready = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        for _ in range(num_processes):
            self._start_worker()
        self._collector = threading.Thread(target=self._collect, name="enhancer-collector",
                                           daemon=True)
        self._collector.start()
        atexit.register(self.close)
        if not self._all_ready.wait(WORKER_START_TIMEOUT_S) or self._broken is not None:
            error = self._broken or ModelError(
                f"workers did not load {self.model_path} within {WORKER_START_TIMEOUT_S:.0f} s")
            self.close()
            raise error

    # ----------------------------------------------------------------- public API

    def __enter__(self) -> AudioEnhancer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def is_ready(self) -> bool:
        """True when the model is loaded and every worker is alive and serving."""
        if self._closed:
            return False
        if self._runner is not None:
            return True
        return self._broken is None and all(w.ready and w.process.is_alive()
                                            for w in list(self._workers))

    @property
    def worker_pids(self) -> list[int]:
        """Process IDs of the current workers (empty inline)."""
        if self._runner is not None:
            return []
        return [w.process.pid for w in list(self._workers) if w.process.pid is not None]

    def submit(self, audio: np.ndarray, session_id: str | None = None,
               progress: Progress | None = None) -> Future:
        """Queue ``audio`` (1-D float) and return a future of the model's output.

        The result is float32 with exactly ``len(audio)`` samples. ``progress``, if given, is
        called with the number of frames just finished, from the collector thread. Float32
        audio is read in place, not copied: leave it unchanged until the future is done.
        """
        audio = check_samples(audio, "audio")
        if audio.ndim != 1:
            raise InvalidAudio(f"audio must be 1-D, got shape {audio.shape}; "
                               f"use enhance() for several channels")
        if self._closed:
            raise EnhancerClosed("the enhancer is closed")
        if self._runner is None and self._broken is not None:
            raise self._broken
        session_id = uuid.uuid4().hex if session_id is None else str(session_id)
        with self._ids_lock:
            if session_id in self._active_ids:
                raise ValueError(f"session_id {session_id!r} is already in use")
            self._active_ids.add(session_id)
        future: Future = Future()
        future.add_done_callback(lambda _: self._forget(session_id))
        frames = self.framing.split(audio)
        output = np.empty((frames.num_frames, self.frame_length), dtype=np.float32)
        session = _Session(session_id, frames, output, future, progress)
        if frames.num_frames == 0:
            future.set_result(np.zeros(0, dtype=np.float32))
        elif self._runner is not None:
            self._run_inline(session)
        else:
            # Under the close lock, so a session is never queued after the collector's last
            # look at the queue.
            with self._close_lock:
                if self._closed:
                    future.set_exception(EnhancerClosed("the enhancer is closed"))
                else:
                    self.unprocessed_frames_queue.put(session)
                    self._wake()
        return future

    def enhance_audio(self, audio: np.ndarray, session_id: str | None = None,
                      timeout: float | None = None,
                      progress: Progress | None = None) -> np.ndarray:
        """Run the model over 1-D ``audio`` at the model's rate; wait for and return the result.

        Raises
        ------
        InvalidAudio
            ``audio`` is not 1-D finite floats.
        WorkerCrashed
            A worker died while holding part of this audio.
        TimeoutError
            No result within ``timeout`` seconds; the session is cancelled.
        """
        future = self.submit(audio, session_id, progress)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def enhance_audio_async(self, audio: np.ndarray,
                                  session_id: str | None = None) -> np.ndarray:
        """Awaitable :meth:`enhance_audio`: the event loop stays free while the pool works."""
        if self._runner is not None:
            return await asyncio.to_thread(self.enhance_audio, audio, session_id)
        return await asyncio.wrap_future(self.submit(audio, session_id))

    def enhance(self, audio: np.ndarray, sample_rate: int, timeout: float | None = None,
                progress: Progress | None = None) -> np.ndarray:
        """Enhance ``audio`` (``[n]`` or ``[n, channels]``) recorded at ``sample_rate``.

        Resamples to the model's rate and back; every channel is enhanced on its own. The
        result has the input's shape and rate.
        """
        model_rate_audio = self._to_model_rate(audio, sample_rate)
        futures = [self.submit(channel, progress=progress) for channel in model_rate_audio]
        try:
            results = [f.result(timeout) for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return self._from_model_rate(results, audio, sample_rate)

    async def enhance_async(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Awaitable :meth:`enhance`; resampling runs in a thread, the model in the pool."""
        channels = await asyncio.to_thread(self._to_model_rate, audio, sample_rate)
        if self._runner is not None:
            results = await asyncio.to_thread(lambda: [self.enhance_audio(c) for c in channels])
        else:
            futures = [asyncio.wrap_future(self.submit(c)) for c in channels]
            try:
                results = await asyncio.gather(*futures)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return await asyncio.to_thread(self._from_model_rate, results, audio, sample_rate)

    def frames_for(self, num_samples: int, sample_rate: int, channels: int = 1) -> int:
        """How many model frames :meth:`enhance` runs for audio of this size and rate."""
        at_model_rate = math.ceil(num_samples * self.model_sample_rate / sample_rate)
        return channels * self.framing.frame_count(at_model_rate)

    def close(self) -> None:
        """Stop and join the workers; unfinished requests fail with ``EnhancerClosed``."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        if self._runner is not None:
            return
        self._closing = True
        self._wake()
        self._collector.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ----------------------------------------------------------------- internals

    def _join(self, session: _Session) -> np.ndarray:
        return self.framing.join(session.output, session.frames.num_samples)

    def _forget(self, session_id: str) -> None:
        with self._ids_lock:
            self._active_ids.discard(session_id)

    def _to_model_rate(self, audio: np.ndarray, sample_rate: int) -> list[np.ndarray]:
        audio = check_samples(audio, "audio")
        resampled = convert_to_required_format(audio, self.model_sample_rate, sample_rate)
        if resampled.ndim == 1:
            return [resampled]
        return [np.ascontiguousarray(resampled[:, c]) for c in range(resampled.shape[1])]

    def _from_model_rate(self, channels: list[np.ndarray], original: np.ndarray,
                         sample_rate: int) -> np.ndarray:
        stacked = channels[0] if original.ndim == 1 else np.stack(channels, axis=1)
        restored = convert_to_required_format(stacked, sample_rate, self.model_sample_rate)
        return fit_length(restored, original.shape[0])

    def _run_inline(self, session: _Session) -> None:
        try:
            with self._inline_lock:
                start = 0
                while start < session.frames.num_frames:
                    block = session.frames.block(start, self.frames_per_block)
                    stop = start + block.shape[0]
                    session.output[start:stop] = self._runner.run(block)
                    self.frames_processed += block.shape[0]
                    if session.progress is not None:
                        session.progress(block.shape[0])
                    start = stop
        except Exception as exc:
            session.future.set_exception(ModelError(f"the model failed: {exc}"))
        else:
            session.future.set_result(self._join(session))

    def _wake(self) -> None:
        # A full pipe means the collector is already due to wake.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _start_worker(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker_main, name="enhancer-worker", daemon=True,
                                    args=(child_conn, str(self.model_path), self.num_threads))
        process.start()
        # Only the worker may hold its end, so that its exit shows here as end-of-file.
        child_conn.close()
        self._workers.append(_Worker(process, parent_conn))

    def _collect(self) -> None:
        """The collector thread: dispatch blocks, gather results, replace dead workers."""
        try:
            while not self._closing:
                by_conn = {w.conn: w for w in self._workers}
                by_sentinel = {w.process.sentinel: w for w in self._workers}
                for ready in wait([self._wake_r, *by_conn, *by_sentinel]):
                    if ready == self._wake_r:
                        self._drain_wake_pipe()
                    elif ready in by_conn:
                        self._receive(by_conn[ready])
                    elif ready in by_sentinel:
                        self._replace(by_sentinel[ready])
                self._accept_sessions()
                self._dispatch()
        except Exception:
            log.exception("the enhancer's collector thread failed")
            self._broken = EnhancerError("the enhancer's collector thread failed")
        finally:
            self._stop_workers()
            self._all_ready.set()
            self._accept_sessions()
            for session in self._round_robin:
                self._fail(session, EnhancerClosed("the enhancer was closed"))
            self._round_robin.clear()

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _accept_sessions(self) -> None:
        while True:
            try:
                session = self.unprocessed_frames_queue.get_nowait()
            except queue.Empty:
                return
            if self._broken is not None:
                self._fail(session, self._broken)
            else:
                self._round_robin.append(session)

    def _dispatch(self) -> None:
        """Give each idle worker the next block, taking sessions in turn so none starves."""
        for worker in self._workers:
            if not worker.ready or worker.task is not None:
                continue
            session = self._next_session()
            if session is None:
                return
            start = session.next_frame
            block = session.frames.block(start, self.frames_per_block)
            count = block.shape[0]
            session.next_frame += count
            if session.next_frame < session.frames.num_frames:
                self._round_robin.append(session)
            task_id = next(self._task_ids)
            worker.task = (task_id, session, start, count)
            try:
                worker.conn.send_bytes(_HEADER.pack(_TASK, task_id, count))
                worker.conn.send_bytes(block)
            except OSError:
                self._replace(worker)

    def _next_session(self) -> _Session | None:
        while self._round_robin:
            session = self._round_robin.popleft()
            if not session.future.done():  # cancelled or failed sessions are dropped
                return session
        return None

    def _receive(self, worker: _Worker) -> None:
        try:
            kind, task_id, count = _HEADER.unpack(worker.conn.recv_bytes())
            if kind == _READY:
                worker.ready = True
                self._failed_starts = 0
                if all(w.ready for w in self._workers):
                    self._all_ready.set()
                return
            message = worker.conn.recv_bytes() if kind == _ERROR else None
            if kind == _ERROR and not worker.ready:
                self._broken = ModelError(message.decode(errors="replace"))
                self._all_ready.set()
                return
            held_id, session, start, held_count = worker.task
            if task_id != held_id or (kind == _RESULT and count != held_count):
                raise EOFError("out-of-step message")
            worker.task = None
            if kind == _ERROR:
                self._fail(session, ModelError(message.decode(errors="replace")))
                return
            if session.future.done():
                worker.conn.recv_bytes()  # cancelled or failed meanwhile: discard
                return
            block = session.output[start:start + count]
            worker.conn.recv_bytes_into(memoryview(block).cast("B"))
        except (EOFError, OSError, TypeError):
            self._replace(worker)
            return
        self.frames_processed += count
        session.frames_done += count
        if session.progress is not None:
            try:
                session.progress(count)
            except Exception:
                log.exception("a progress callback failed")
        if session.frames_done == session.frames.num_frames:
            # The caller may have cancelled it meanwhile.
            with contextlib.suppress(InvalidStateError):
                session.future.set_result(self._join(session))

    def _replace(self, worker: _Worker) -> None:
        """A worker died: fail the request it held and start another in its place."""
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        worker.conn.close()
        worker.process.join(1.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        how = _describe_exit(worker.process.exitcode)
        log.warning("worker process %s %s", worker.process.pid, how)
        if worker.task is not None:
            self._fail(worker.task[1], WorkerCrashed(
                f"worker process {worker.process.pid} {how} while processing this request"))
        if self._closing:
            return
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= MAX_FAILED_STARTS:
                self._broken = self._broken or ModelError(
                    f"workers keep dying while loading {self.model_path} (last one {how})")
                self._all_ready.set()
                for session in self._round_robin:
                    self._fail(session, self._broken)
                self._round_robin.clear()
                return
        self._start_worker()
        self.worker_restarts += 1

    @staticmethod
    def _fail(session: _Session, error: Exception) -> None:
        with contextlib.suppress(InvalidStateError):
            session.future.set_exception(error)

    def _stop_workers(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(_HEADER.pack(_STOP, 0, 0))
        for worker in self._workers:
            worker.process.join(WORKER_STOP_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
            if worker.task is not None:
                self._fail(worker.task[1], EnhancerClosed("the enhancer was closed"))
        self._workers.clear()


# --------------------------------------------------------------------- command line

AUDIO_SUFFIXES = {".wav", ".flac", ".raw", ".pcm", ".f32", ".s16"}


class CliError(Exception):
    """A problem to report on one line, exiting with status 2."""


def build_parser() -> argparse.ArgumentParser:
    from settings import DEFAULT_MODEL_PATH

    parser = argparse.ArgumentParser(
        prog="enhance_file.py",
        description="Enhance an audio file (or every audio file in a folder) with a TFLite "
                    "model. WAV and FLAC are read with their own rate and encoding; other "
                    "files are headerless samples in --format at --sample-rate. The output "
                    "has the input's format, rate, channels and length.")
    parser.add_argument("--source-file", required=True, type=Path,
                        help="audio file, or folder of audio files, to enhance")
    parser.add_argument("--destination-file", required=True, type=Path,
                        help="where to write the result (a folder when the source is one); "
                             "written atomically, never left half-written")
    parser.add_argument("--model-path", type=Path, default=None,
                        help=f"TFLite model, input [batch, frame, 1] float32 "
                             f"(default: $TF_MODEL_PATH or {DEFAULT_MODEL_PATH})")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="worker processes; 0 runs inline (default: $NUM_PROCESSES or "
                             "one per core)")
    parser.add_argument("--sample-rate", type=int, default=48000,
                        help="rate of headerless input in Hz, 8000-192000 (default: %(default)s)")
    parser.add_argument("--format", choices=sorted(RAW_FORMATS), default="f32le",
                        help="encoding of headerless input: float32 or int16, little-endian "
                             "(default: %(default)s)")
    return parser


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it, so no half file is left."""
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_audio(source: Path, raw_format: str, sample_rate: int) -> DecodedAudio:
    """Read and decode ``source``, turning every failure into a one-line ``CliError``."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        return decode_audio(data, raw_format, sample_rate)
    except InvalidAudio as exc:
        raise CliError(f"{source}: {exc}") from None


def enhance_to_file(enhancer: AudioEnhancer, audio: DecodedAudio, destination: Path,
                    show_progress: bool = True) -> int:
    """Enhance ``audio`` and write it, in its own format, to ``destination``.

    Returns the number of samples clipped to the integer range.
    """
    from tqdm import tqdm

    total = enhancer.frames_for(audio.samples.shape[0], audio.sample_rate, audio.channels)
    # A bar only on a terminal, and only for inputs long enough to wait for (~10 s at 48 kHz).
    with tqdm(total=total, unit="frame", leave=False,
              disable=None if show_progress and total >= 500 else True) as bar:
        enhanced = enhancer.enhance(audio.samples, audio.sample_rate, progress=bar.update)
    encoded, clipped = encode_audio(enhanced, audio.sample_rate, audio.format)
    try:
        _write_atomically(destination, encoded)
    except OSError as exc:
        raise CliError(f"cannot write {destination}: {exc.strerror or exc}") from None
    return clipped


def _enhance_folder(enhancer: AudioEnhancer, source: Path, destination: Path,
                    raw_format: str, sample_rate: int) -> int:
    """Enhance every audio file in ``source`` into ``destination``; return how many were skipped."""
    from tqdm import tqdm

    files = sorted(p for p in source.iterdir()
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    destination.mkdir(parents=True, exist_ok=True)
    skipped = 0
    for path in tqdm(files, unit="file", desc="files", disable=None):
        try:
            audio = load_audio(path, raw_format, sample_rate)
            clipped = enhance_to_file(enhancer, audio, destination / path.name,
                                      show_progress=False)
        except CliError as exc:
            skipped += 1
            tqdm.write(f"warning: skipped {exc}", file=sys.stderr)
            continue
        if clipped:
            tqdm.write(f"warning: {path.name}: {clipped} samples clipped to the integer range",
                       file=sys.stderr)
    return skipped


def run_cli(argv: list[str] | None = None) -> int:
    """Parse ``argv``, enhance, and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    model_path = args.model_path or settings.model_path
    num_processes = settings.NUM_PROCESSES if args.num_processes is None else args.num_processes
    source, destination = args.source_file, args.destination_file
    try:
        if num_processes < 0:
            raise CliError(f"--num-processes must be 0 or more, got {num_processes}")
        try:
            check_sample_rate(args.sample_rate, "--sample-rate")
        except ValueError as exc:
            raise CliError(str(exc)) from None
        if source.is_dir():
            if destination.exists() and not destination.is_dir():
                raise CliError(f"--destination-file must be a folder when --source-file is "
                               f"one: {destination}")
            with AudioEnhancer(model_path, num_processes,
                               model_sample_rate=settings.DESIRED_SAMPLE_RATE) as enhancer:
                skipped = _enhance_folder(enhancer, source, destination, args.format,
                                          args.sample_rate)
            if skipped:
                raise CliError(f"{skipped} file(s) in {source} could not be enhanced")
            return 0
        if not source.exists():
            raise CliError(f"source file not found: {source}")
        if not destination.parent.is_dir():
            raise CliError(f"cannot write {destination}: folder {destination.parent} "
                           f"does not exist")
        # Decode before starting workers, so bad input fails fast.
        audio = load_audio(source, args.format, args.sample_rate)
        with AudioEnhancer(model_path, num_processes,
                           model_sample_rate=settings.DESIRED_SAMPLE_RATE) as enhancer:
            clipped = enhance_to_file(enhancer, audio, destination)
        if clipped:
            print(f"warning: {clipped} samples clipped to the integer range", file=sys.stderr)
    except (CliError, EnhancerError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    sys.exit(run_cli())

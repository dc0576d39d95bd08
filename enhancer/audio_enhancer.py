"""``AudioEnhancer``: run a TFLite model over audio of any rate and channel count.

The façade validates audio, resamples it to the model's rate, splits each channel into frames
(:mod:`enhancer.model.framing`), hands them to a backend (:mod:`enhancer.backends.pool`,
``inline`` or ``ray``; a chained model's through :mod:`enhancer.backends.chain`), then joins
the processed frames (overlap-add) and resamples back, on the caller's side.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from enhancer.audio.formats import check_sample_rate, check_samples
from enhancer.audio.resample import convert_to_required_format, fit_length
from enhancer.backends.base import Backend, Priority, Progress
from enhancer.backends.chain import chained
from enhancer.backends.inline import InlineBackend
from enhancer.backends.pool.pool import (
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    DEFAULT_MIN_BLOCK_DEADLINE_S,
    WorkerPool,
    measure_speed,
    refuse_start_while_bootstrapping,
)
from enhancer.errors import EnhancerClosed, InvalidAudio
from enhancer.model.attenuation import attenuation_floor, limit_attenuation
from enhancer.model.card import ModelCard, framing_for, load_card
from enhancer.model.framing import Framing
from enhancer.model.grid import ChannelJob, Job
from enhancer.model.loading import load_model_runner, load_step_runner
from enhancer.model.runner import FrameModel

if TYPE_CHECKING:
    from enhancer.backends.ray.backend import RayOptions
    from enhancer.stream import EnhancerStream

# The largest segment sent to a worker, in samples at the model's rate (a worker's shared memory
# holds one): large, so pipe and wake-up costs vanish; cut smaller to spread over every worker.
MAX_SEGMENT_SAMPLES = 256 * 1024
# A model on a grid runs a segment's cells side by side, one row each, and rows share each
# step's weights: a minute of 48 kHz speech through 2 workers with the recurrent denoiser,
# 184x real time in segments of 2 cells, 220x in 4, 219x in 8.
GRID_CELLS_PER_SEGMENT = 4


class AudioEnhancer:
    """Run a TFLite model over audio on a pool of worker processes.

    Parameters
    ----------
    model_path : str or Path
        A ``.tflite`` model with input ``[batch, frame, 1]`` float32; the frame length is read
        from it. A model card beside it (same name, ``.json``) gives its rate, hop and window:
        see :mod:`enhancer.model.card`.
    num_processes : int, optional
        Worker processes (default: one per core). 0 runs the model inline, in the calling
        process, which is simplest to debug.
    num_threads : int
        Interpreter threads in each worker.
    model_sample_rate : int
        The rate the model runs at if it has no model card (a card's rate wins).
    max_segment_frames : int, optional
        The most frames sent to a worker at once (default: about ``MAX_SEGMENT_SAMPLES``
        samples' worth, or ``GRID_CELLS_PER_SEGMENT`` cells of a model on a grid if that is
        more). A model on a grid needs at least one cell.
    min_block_deadline_s : float
        The watchdog's floor: a worker that holds a block longer than this plus 50 times the
        block's expected run time (the model's speed is measured) is killed and replaced, and
        the block runs once more on another worker.
    heartbeat_timeout_s : float
        An idle worker that does not answer its heartbeat (every 0.5 s) within this long is
        killed and replaced; :attr:`is_ready` is False until the replacement has loaded.
    backend : str
        ``"local"`` (the default): worker processes on this machine, or inline with
        ``num_processes=0``. ``"ray"``: replicas of a Ray Serve deployment, on any machine of
        a Ray cluster (:mod:`enhancer.backends.ray.backend`; ``num_processes`` is then unused).
    ray_options : RayOptions, optional
        The cluster and the deployment's shape for ``backend="ray"`` (default: a local
        cluster, one replica).

    Use it as a context manager, or call :meth:`close`; workers are also stopped when the
    parent exits, and exit by themselves if the parent dies. Workers are spawned, and so
    import the main script again: a script must start the enhancer under
    ``if __name__ == "__main__":``, else it gets ``ModelError`` saying so.
    """

    def __init__(self, model_path: str | Path, num_processes: int | None = None,
                 num_threads: int = 1, model_sample_rate: int = 48000,
                 max_segment_frames: int | None = None,
                 min_block_deadline_s: float = DEFAULT_MIN_BLOCK_DEADLINE_S,
                 backend: str = "local", ray_options: RayOptions | None = None,
                 heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S) -> None:
        self.num_processes = _check_arguments(backend, num_processes, num_threads,
                                              model_sample_rate)
        if backend == "local" and self.num_processes:
            refuse_start_while_bootstrapping()  # before loading the model, in each worker
        self.model_path = Path(model_path)
        # Loading the model here refuses a bad one before any worker starts.
        runner = load_model_runner(self.model_path, num_threads)
        self.frame_length = runner.frame_length
        self.card = load_card(self.model_path, model_sample_rate)
        self.framing = framing_for(self.card, self.frame_length)
        self.model_sample_rate = self.card.sample_rate
        self.max_segment_frames = _segment_limit(max_segment_frames, self.framing)
        self._active_ids: set[str] = set()
        self._ids_lock = threading.Lock()
        self._closed = False
        self.backend: Backend = chained(_start_backend(
            backend, runner, self.card, self.framing, self.num_processes, num_threads,
            self.max_segment_frames, min_block_deadline_s, ray_options, heartbeat_timeout_s),
            self.card, self.framing, self.max_segment_frames)

    def __enter__(self) -> AudioEnhancer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- state, for the service

    @property
    def is_ready(self) -> bool:
        """True when the model is loaded and every worker is alive and serving."""
        return not self._closed and self.backend.is_ready

    @property
    def worker_pids(self) -> list[int]:
        """Process IDs of the current workers (empty inline)."""
        return self.backend.worker_pids

    @property
    def worker_restarts(self) -> int:
        return self.backend.restarts

    @property
    def frames_processed(self) -> int:
        return self.backend.frames_processed

    @property
    def pending_sessions(self) -> int:
        """Channels queued or running in the backend; 0 when nothing is left behind."""
        return getattr(self.backend, "pending_sessions", 0)

    def frames_for(self, num_samples: int, sample_rate: int, channels: int = 1) -> int:
        """How many model frames :meth:`enhance` runs for audio of this size and rate."""
        at_model_rate = math.ceil(num_samples * self.model_sample_rate / sample_rate)
        return channels * self.framing.frame_count(at_model_rate)

    # ----------------------------------------------------------------- one channel, model rate

    def submit(self, audio: np.ndarray, session_id: str | None = None,
               progress: Progress | None = None) -> Future[np.ndarray]:
        """Queue 1-D ``audio`` at the model's rate; return a future of the model's output.

        The result is float32, exactly ``len(audio)`` samples; ``progress`` gets the frames just
        finished (from the collector thread). Float32 audio is read in place: keep it as is.
        """
        job_future = self._run([self._check_mono(audio)], session_id, progress)
        result: Future[np.ndarray] = Future()

        def join(done: Future[Job]) -> None:
            if done.cancelled():
                result.cancel()
            elif done.exception() is not None:
                result.set_exception(done.exception())
            else:
                try:
                    result.set_result(self._join(done.result())[0])
                except Exception as exc:  # fails this request only
                    result.set_exception(exc)

        job_future.add_done_callback(join)
        # Cancelling the result drops the segments not yet run.
        result.add_done_callback(lambda r: r.cancelled() and job_future.cancel())
        return result

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
        future = self._run([self._check_mono(audio)], session_id, progress)
        (job,) = _results([future], timeout)
        return self._join(job)[0]

    async def enhance_audio_async(self, audio: np.ndarray, session_id: str | None = None,
                                  timeout: float | None = None,
                                  progress: Progress | None = None) -> np.ndarray:
        """Awaitable :meth:`enhance_audio`: the event loop stays free while the model runs."""
        mono = self._check_mono(audio)
        future = await asyncio.to_thread(self._run, [mono], session_id, progress)
        job = await _await(future, timeout)
        return (await asyncio.to_thread(self._join, job))[0]

    # ----------------------------------------------------------------- any rate, any channels

    def enhance(self, audio: np.ndarray, sample_rate: int, timeout: float | None = None,
                progress: Progress | None = None,
                atten_lim_db: float | None = None) -> np.ndarray:
        """Enhance ``audio`` (``[n]`` or ``[n, channels]``) recorded at ``sample_rate``.

        Resamples to the model's rate and back; every channel is enhanced on its own. The
        result has the input's shape and rate. ``atten_lim_db`` limits how much the result
        may attenuate anything (see :func:`limit_attenuation`); ``None``: no limit.
        """
        lim = attenuation_floor(atten_lim_db)
        channels = self._to_model_rate(audio, sample_rate)
        future = self._run(channels, None, progress)
        (job,) = _results([future], timeout)
        enhanced = self._from_model_rate(self._join(job), audio, sample_rate)
        return limit_attenuation(audio, enhanced, lim)

    async def enhance_async(self, audio: np.ndarray, sample_rate: int,
                            timeout: float | None = None,
                            progress: Progress | None = None,
                            atten_lim_db: float | None = None) -> np.ndarray:
        """Awaitable :meth:`enhance`; resampling and joining run in a thread, the model in
        the backend, so the event loop stays free."""
        lim = attenuation_floor(atten_lim_db)

        def start() -> Future[Job]:
            return self._run(self._to_model_rate(audio, sample_rate), None, progress)

        def finish(job: Job) -> np.ndarray:
            enhanced = self._from_model_rate(self._join(job), audio, sample_rate)
            return limit_attenuation(audio, enhanced, lim)

        # Two hops to a thread, not one a step: each costs a wake-up.
        job = await _await(await asyncio.to_thread(start), timeout)
        return await asyncio.to_thread(finish, job)

    def open_stream(self, sample_rate: int, channels: int = 1,
                    atten_lim_db: float | None = None,
                    whole_cells: bool = False) -> EnhancerStream:
        """A stream at ``sample_rate``: push chunks as they come, get enhanced audio back.

        Its concatenated output equals :meth:`enhance` on the whole audio; see
        :mod:`enhancer.stream`. ``whole_cells`` is for a file read in blocks: a recurrent
        model runs it in whole cells, in parallel, as a file (a live stream's output would
        come later by up to a cell).
        """
        from enhancer.stream import EnhancerStream

        if self._closed:
            raise EnhancerClosed("the enhancer is closed")
        return EnhancerStream(self, sample_rate, channels, atten_lim_db, whole_cells)

    def close(self) -> None:
        """Stop the workers; unfinished requests fail with ``EnhancerClosed``."""
        self._closed = True
        self.backend.close()

    # ----------------------------------------------------------------- internals

    @staticmethod
    def _check_mono(audio: np.ndarray) -> np.ndarray:
        audio = check_samples(audio, "audio")
        if audio.ndim != 1:
            raise InvalidAudio(f"audio must be 1-D, got shape {audio.shape}; "
                               f"use enhance() for several channels")
        return audio

    def _run(self, channels: list[np.ndarray], session_id: str | None,
             progress: Progress | None, priority: Priority = Priority.FILE) -> Future[Job]:
        """Queue 1-D channels at the model's rate as one job; the future completes with it.

        Float32 channels are read in place, not copied: they must not change meanwhile.
        """
        if self._closed:
            raise EnhancerClosed("the enhancer is closed")
        session_id = uuid.uuid4().hex if session_id is None else str(session_id)
        with self._ids_lock:
            if session_id in self._active_ids:
                raise ValueError(f"session_id {session_id!r} is already in use")
            self._active_ids.add(session_id)
        job = Job([ChannelJob.offline(self.framing, np.asarray(c, np.float32))
                   for c in channels])
        if job.num_frames == 0:
            future: Future[Job] = Future()
            future.set_result(job)
        else:
            future = self.backend.run(job, session_id, progress, priority)
        future.add_done_callback(lambda _: self._forget(session_id))
        return future

    @staticmethod
    def _join(job: Job) -> list[np.ndarray]:
        """Each channel's samples: the segments' results, joined where they meet."""
        return [channel.finish(channel.samples.shape[0]) for channel in job.channels]

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


def _check_arguments(backend: str, num_processes: int | None, num_threads: int,
                     model_sample_rate: int) -> int:
    """Refuse a bad argument, naming it; the number of worker processes (default: one per
    core)."""
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if num_processes is None:
        num_processes = os.cpu_count() or 1
    if isinstance(num_processes, bool) or not isinstance(num_processes, int):
        raise TypeError(f"num_processes must be an int, got {type(num_processes).__name__}")
    if num_processes < 0:
        raise ValueError(f"num_processes must be 0 or more, got {num_processes}")
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
    check_sample_rate(model_sample_rate, "model_sample_rate")
    return num_processes


def _segment_limit(max_segment_frames: int | None, framing: Framing) -> int:
    """The most frames sent to a worker at once: as asked, checked against the model's grid,
    or by default about ``MAX_SEGMENT_SAMPLES`` (``GRID_CELLS_PER_SEGMENT`` cells if more)."""
    if max_segment_frames is None:
        return max(1, MAX_SEGMENT_SAMPLES // framing.hop_length,
                   GRID_CELLS_PER_SEGMENT * framing.grid)
    if max_segment_frames < 1:
        raise ValueError(f"max_segment_frames must be positive, got {max_segment_frames}")
    if max_segment_frames < framing.grid:
        raise ValueError(f"max_segment_frames must be at least {framing.grid} (the "
                         f"model's grid cell), got {max_segment_frames}")
    return max_segment_frames


def _start_backend(backend: str, runner: FrameModel, card: ModelCard, framing: Framing,
                   num_processes: int, num_threads: int, max_segment_frames: int,
                   min_block_deadline_s: float, ray_options: RayOptions | None,
                   heartbeat_timeout_s: float) -> Backend:
    """Where segments run: Ray Serve replicas, this process (``num_processes=0``) or a pool."""
    if backend == "ray":
        from enhancer.backends.ray.backend import RayOptions, RayServeBackend

        return RayServeBackend(card.model_path, card.name, framing, ray_options or RayOptions(),
                               step_model_path=card.stream_step_path,
                               state_size=card.stream_state_size)
    if num_processes == 0:
        step = None
        if card.stream_step_path is not None:
            step = load_step_runner(card.stream_step_path, runner.frame_length,
                                    card.stream_state_size, num_threads)
        return InlineBackend(runner, framing, max_segment_frames, step)
    seconds_per_frame = measure_speed(runner, min(max_segment_frames, 64), framing.context)
    return WorkerPool(card.model_path, num_processes, num_threads, framing, max_segment_frames,
                      seconds_per_frame, min_block_deadline_s,
                      step_model_path=card.stream_step_path, state_size=card.stream_state_size,
                      heartbeat_timeout_s=heartbeat_timeout_s)


def _results(futures: list[Future[Job]], timeout: float | None) -> list[Job]:
    """Wait for every future; on any error or timeout cancel them all and raise it."""
    try:
        return [future.result(timeout) for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        raise


async def _await(future: Future[Job], timeout: float | None) -> Job:
    """Await a backend's future; on a timeout or cancellation, cancel it too."""
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.wrap_future(future)
    except BaseException:
        future.cancel()
        raise

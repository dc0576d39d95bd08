"""The job runner: a thread that claims queued jobs and enhances each block by block.

A job's audio goes through one enhancer stream a block at a time, as the CLI's files do
(:mod:`enhancer.apps.enhance_files`: the same block size, the same whole-cell streams), so
memory stays flat whatever the length, and the result equals ``AudioEnhancer.enhance`` of the
whole audio bit for bit. Its blocks go at :attr:`Priority.JOB`, below live streams and
``/enhance`` requests. The result is written to a temporary name and renamed once whole.

The runner waits on an event: set when this process queues a job, and at each sweep (every
``sweep_s``), which also picks up jobs queued by other front ends and deletes expired ones.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from enhancer.apps.enhance_files import (
    BLOCK_MODEL_SAMPLES,
    atomic_output,
    block_frames,
    open_source,
)
from enhancer.audio.decode import AudioReader, open_audio
from enhancer.audio.encode import AudioWriter
from enhancer.audio.formats import Budget, check_samples
from enhancer.audio_enhancer import AudioEnhancer
from enhancer.backends.base import Priority
from enhancer.errors import EnhancerError, InvalidAudio, TooLarge
from enhancer.jobs.store import FAILED, SUCCEEDED, JobRecord, JobStore, runner_name
from enhancer.stream import EnhancerStream

log = logging.getLogger("enhancer.jobs")

# Samples per block read, at the model's rate: an eighth of the CLI's (about 2.7 s of 48 kHz
# mono), so the front end's share of the work (decoding, resampling, joining, encoding)
# holds the interpreter for short stretches beside live streams.
JOB_BLOCK_SAMPLES = BLOCK_MODEL_SAMPLES // 8
# Progress and the lease are written at most this often.
REPORT_S = 1.0
# An upload's folder without a job, untouched this long, was left by a server killed while
# receiving it (an upload in progress writes every BODY_TIMEOUT_S at the latest).
STRAY_AGE_S = 600.0

Finished = Callable[[JobRecord, float], None]
"""Called with a job that ended (from the runner's thread) and the seconds it ran."""


class JobLost(Exception):
    """The job stopped being this runner's: cancelled, or its lease taken over."""


@dataclass(frozen=True)
class RunnerOptions:
    lease_s: float = 60.0  # a claim not renewed for this long may be taken over
    retention_s: float = 86_400.0  # ended jobs are deleted this long after they end
    sweep_s: float = 5.0  # how often to look for others' jobs and expired ones
    max_audio_seconds: float | None = None  # JOB_MAX_AUDIO_SECONDS
    max_channels: int | None = None


class JobRunner:
    """Claims jobs from ``store`` one at a time and runs them with ``enhancer_for(model)``."""

    def __init__(self, store: JobStore, enhancer_for: Callable[[str | None], AudioEnhancer],
                 options: RunnerOptions, on_finished: Finished | None = None) -> None:
        self.store = store
        self.enhancer_for = enhancer_for
        self.options = options
        self.on_finished = on_finished
        self.name = runner_name()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)

    def start(self) -> None:
        self.store.requeue_orphans(self.name)
        self.store.remove_strays(STRAY_AGE_S)
        self._thread.start()

    def wake(self) -> None:
        """A job was queued: look now."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current block and queue the job it was running again, for the
        next runner (after a kill instead: when its lease runs out, or at once by the next
        start on this host)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.store.release(self.name)

    def _loop(self) -> None:
        last_sweep = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_sweep >= self.options.sweep_s:
                    last_sweep = time.monotonic()
                    self.store.expire(self.options.retention_s)
                    self.store.requeue_orphans(self.name)
                job = self.store.claim(self.name, self.options.lease_s)
            except Exception:
                log.exception("the job store failed; trying again")
                job = None
            if job is not None:
                self.run_one(job)
                continue
            self._wake.wait(self.options.sweep_s)
            self._wake.clear()

    def run_one(self, job: JobRecord) -> None:
        """Run a claimed job to its end: succeeded, failed with the reason, or left to
        whoever took it over."""
        started = time.monotonic()
        status, error = SUCCEEDED, None
        try:
            size = self._enhance(job)
        except JobLost:
            log.info("job %s stopped: cancelled or taken over", job.id)
            return
        except EnhancerError as exc:
            status, error, size = FAILED, str(exc), 0
        except Exception as exc:  # a bug must not stop the runner: the job fails, says why
            log.exception("job %s failed", job.id)
            status, error, size = FAILED, f"{type(exc).__name__}: {exc}", 0
        if self._stop.is_set() and status == FAILED:
            return  # failed by the shutdown: left to the next start
        input_bytes = _size(self.store.input_path(job.id))
        if not self.store.finish(job.id, self.name, status, error, input_bytes + size):
            return
        ended = self.store.get(job.id)
        if ended is not None and self.on_finished is not None:
            try:
                self.on_finished(ended, time.monotonic() - started)
            except Exception:
                log.exception("the finished-job callback failed")

    def _enhance(self, job: JobRecord) -> int:
        """Enhance the job's input into its result; return the result's size in bytes."""
        source = self.store.input_path(job.id)
        if not source.is_file():
            raise InvalidAudio("the job's input file is missing")
        enhancer = self.enhancer_for(job.model)
        with open_source(source) as f, open_audio(f, job.raw_format, job.sample_rate) as reader:
            self._check(reader)
            destination = self.store.result_path(job.id)
            with atomic_output(destination) as out:
                asyncio.run(self._stream(job, enhancer, reader, out))
        return _size(destination)

    def _check(self, reader: AudioReader) -> None:
        info = reader.info
        Budget(max_channels=self.options.max_channels).check(info)
        most = self.options.max_audio_seconds
        if most is not None and info.seconds is not None and info.seconds > most:
            raise TooLarge(f"the audio is {info.seconds:.1f} s long; the limit is "
                           f"JOB_MAX_AUDIO_SECONDS={most:g}")

    async def _stream(self, job: JobRecord, enhancer: AudioEnhancer, reader: AudioReader,
                      out: IO[bytes]) -> None:
        info = reader.info
        stream = job_stream(enhancer, info.sample_rate, info.channels, job.atten_lim_db)
        frames = block_frames(enhancer, info.sample_rate, info.channels, JOB_BLOCK_SAMPLES)
        total = info.frames
        done, reported = 0, -REPORT_S  # the first block reports at once
        with AudioWriter(out, info.format, info.sample_rate, info.channels) as writer:
            while True:
                if self._stop.is_set():
                    raise JobLost
                chunk = reader.read(frames)
                if len(chunk) == 0:
                    break
                try:
                    check_samples(chunk, "the audio")
                except InvalidAudio as exc:
                    raise InvalidAudio(f"{exc} (in the block from "
                                       f"{done / info.sample_rate:.1f} s)") from None
                writer.write(await stream.push(chunk))
                done += len(chunk)
                if time.monotonic() - reported >= REPORT_S:
                    reported = time.monotonic()
                    progress = min(done / total, 0.999) if total else 0.0
                    if not await asyncio.to_thread(self.store.renew, job.id, self.name,
                                                   self.options.lease_s, progress):
                        raise JobLost
            writer.write(await stream.finish())


def job_stream(enhancer: AudioEnhancer, sample_rate: int, channels: int,
               atten_lim_db: float | None) -> EnhancerStream:
    """The stream a job's blocks go through: whole cells, as the CLI's files, at
    :attr:`Priority.JOB`, so they wait behind live streams and requests and stay off the live
    lane. A chained model's chunk still goes whole, its state with it (``grid.Job.locate``)."""
    stream = enhancer.open_stream(sample_rate, channels, atten_lim_db, whole_cells=True)
    stream.priority = Priority.JOB
    return stream


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

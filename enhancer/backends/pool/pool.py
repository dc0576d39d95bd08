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
  (:func:`~enhancer.backends.pool.records.pick_worker`), so a chunk never waits behind a
  file. The other workers, the *file lanes*, run at a lower CPU priority
  (``FILE_LANE_NICE``): when the machine is busy, a long file takes only what the live lane,
  the API and its clients leave.
- *arena*: a worker's shared memory, made once with the worker and reused: the segment's
  samples go in, its result comes out; the pipe carries only small headers.

The design's *processed frames queue* is realised as one duplex pipe per worker, read by the
collector with ``multiprocessing.connection.wait`` (together with every worker's process
sentinel and a wake-up pipe), so nothing polls. One shared queue would be simpler, but a
worker killed while holding that queue's lock would freeze every other worker, and nobody
would know which block the dead worker held. With a pipe each, the collector knows every
worker's task, fails exactly that session when its worker dies, and starts a replacement.

Threads: the collector thread alone owns ``_workers``, ``_round_robin``, the arenas and every
task and session's progress counters. Callers touch only ``unprocessed_frames_queue``
(thread-safe), the wake-up pipe, and ``_closed`` under ``_close_lock``.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from multiprocessing.connection import wait
from pathlib import Path

from enhancer.backends.base import Priority, Progress, Session, fail
from enhancer.backends.pool import records as work
from enhancer.backends.pool.records import Arena, Part, Task, Worker
from enhancer.backends.pool.worker_process import (
    PLAIN,
    ArenaSpec,
    Header,
    MessageKind,
    last_line,
    task_message,
    worker_failure,
)
from enhancer.errors import EnhancerClosed, ModelError, PoolBroken, WorkerCrashed
from enhancer.model.framing import Framing
from enhancer.model.grid import (
    Job,
    input_length,
    result_length,
    segment_frames,
    stream_step_refusal,
)

log = logging.getLogger("enhancer.pool")

WORKER_START_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 5.0
MAX_FAILED_STARTS = 3
# A segment's deadline: the floor plus this many times its expected run time; generous, so a
# busy machine never kills a healthy worker, and a hung one is still caught within seconds.
DEADLINE_FACTOR = 50.0
DEFAULT_MIN_BLOCK_DEADLINE_S = 5.0
# Most stream chunks one task takes when chunks queue up: one wake-up and one round trip for
# all, yet a chunk waits for at most this many others before its result comes back.
MAX_CHUNKS_PER_TASK = 8
# The file lanes' niceness: below the API process and the live lane, so on a busy machine a
# long file gets the CPU that live streams leave free. 0 turns it off.
FILE_LANE_NICE = 10


class WorkerPool:
    """Run jobs, segment by segment, on ``num_processes`` spawned worker processes.

    Raises ``ModelError`` when the workers cannot load the model within
    ``WORKER_START_TIMEOUT_S``. A worker that dies is replaced; the session it held fails
    with ``WorkerCrashed``. Workers that keep dying at start-up break the pool: every
    queued and later session fails with ``PoolBroken``.
    """

    def __init__(self, model_path: str | Path, num_processes: int, num_threads: int,
                 framing: Framing, max_segment_frames: int, seconds_per_frame: float = 1e-3,
                 min_block_deadline_s: float = DEFAULT_MIN_BLOCK_DEADLINE_S,
                 file_lane_nice: int = FILE_LANE_NICE, step_model_path: str | Path | None = None,
                 state_size: int = 0) -> None:
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
        self._arena_names = (f"{self.arena_prefix}{n}" for n in itertools.count())
        self.unprocessed_frames_queue: queue.SimpleQueue[Session] = queue.SimpleQueue()
        self.frames_processed = 0
        self.tasks_sent = 0
        self.restarts = 0
        self.hung_workers = 0
        # The model's speed, measured: a running average over the blocks run so far.
        self._seconds_per_frame = seconds_per_frame
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[Worker] = []
        # Sessions with frames left to send, taking turns; live streams' before files'.
        self._round_robin: dict[Priority, deque[Session]] = {p: deque() for p in Priority}
        self._task_ids = itertools.count(1)
        self._last_live = -work.LIVE_RECENT_S  # when a live chunk last came
        self._failed_starts = 0
        self._broken_reason: str | None = None
        self._closed = False
        self._closing = False
        self._close_lock = threading.Lock()
        self._all_ready = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._wake_due = False
        for end in (self._wake_r, self._wake_w):
            os.set_blocking(end, False)
        for index in range(num_processes):
            self._start_worker(live_lane=index == 0)
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
                self._wake()
        return future

    @property
    def is_ready(self) -> bool:
        return (not self._closed and self._broken_reason is None
                and self._collector.is_alive()
                and all(w.ready and w.process.is_alive() for w in list(self._workers)))

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

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._closing = True
        self._wake()
        self._collector.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ----------------------------------------------------------------- the collector thread

    def _collect(self) -> None:
        """Dispatch blocks, gather results, replace dead workers; until closed."""
        try:
            while not self._closing:
                by_conn = {w.conn: w for w in self._workers}
                by_sentinel = {w.process.sentinel: w for w in self._workers}
                # Wake for the next segment's deadline too: that is the watchdog.
                for ready in wait([self._wake_r, *by_conn, *by_sentinel],
                                  work.time_to_next_deadline(self._workers)):
                    if ready == self._wake_r:
                        self._drain_wake_pipe()
                    elif ready in by_conn:
                        self._receive(by_conn[ready])
                    elif ready in by_sentinel:
                        self._replace(by_sentinel[ready])
                self._kill_hung_workers()
                self._accept_sessions()
                self._dispatch()
        except Exception as exc:
            log.exception("the enhancer's collector thread failed")
            self._mark_broken(f"the worker pool's collector thread failed: "
                              f"{type(exc).__name__}: {exc}")
        finally:
            self._stop_workers()
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
        held = [s for w in self._workers if w.task is not None for s in w.task.sessions]
        for waiting in self._round_robin.values():
            for session in [*waiting, *held]:
                fail(session.future, error_type(message))
            waiting.clear()

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        # After reading, not before: a byte written meanwhile may have been read above, and
        # the sessions queued before it are taken next, by _accept_sessions.
        self._wake_due = False

    def _accept_sessions(self) -> None:
        while True:
            try:
                session = self.unprocessed_frames_queue.get_nowait()
            except queue.Empty:
                return
            if self._broken_reason is not None:
                fail(session.future, PoolBroken(self._broken_reason))
            else:
                self._round_robin[session.priority].append(session)
                if session.priority == Priority.LIVE:
                    self._last_live = time.monotonic()

    def _dispatch(self) -> None:
        """Give each idle worker the next segment, sessions taking turns so none starves;
        live chunks to the live lane first, file segments to the file lanes. When chunks
        queue up, a worker takes several at once (their share, at most
        ``MAX_CHUNKS_PER_TASK``)."""
        idle = [w for w in self._workers if w.ready and w.task is None]
        live = self._round_robin[Priority.LIVE]
        while idle:
            session = work.next_session(self._round_robin)
            if session is None:
                return
            worker = work.pick_worker(idle, session.priority, len(self._workers),
                                      self._last_live)
            if worker is None:
                self._round_robin[session.priority].appendleft(session)
                return  # only file segments are left, and the live lane waits for chunks
            share = 1
            if session.priority == Priority.LIVE:
                share = min(MAX_CHUNKS_PER_TASK, -(-(len(live) + 1) // len(idle)))
            idle.remove(worker)
            parts: list[Part] = []
            while session is not None:
                if not self._take_part(session, worker.arena, parts):
                    live.appendleft(session)  # the arena is full: it goes first next time
                    break
                session = (work.next_session({Priority.LIVE: live})
                           if session.priority == Priority.LIVE and len(parts) < share
                           else None)
            now = time.monotonic()
            task = Task(next(self._task_ids), parts, now, now + self.min_block_deadline_s
                        + DEADLINE_FACTOR * sum(p.count for p in parts) * self._seconds_per_frame)
            worker.task = task
            self.tasks_sent += 1
            try:
                worker.conn.send_bytes(task_message(task.task_id, [p.count for p in parts],
                                                    [p.kind for p in parts]))
            except OSError:
                self._replace(worker)

    def _take_part(self, session: Session, arena: Arena, parts: list[Part]) -> bool:
        """Add the session's next segment to the task's ``parts`` and its samples to the
        arena, after those of the parts before; False if the arena has no room left for it."""
        if session.retry:
            first, count = session.retry[0]
        else:
            first = session.next_frame
            _, _, count = session.job.locate(first, work.segment_limit(session,
                                                                       self._last_live))
        channel, channel_first, count = session.job.locate(first, count)
        # A stream step's state goes in front of its samples and comes back behind its result.
        state_floats = 0 if channel.state is None else self.state_size
        input_size = state_floats + input_length(channel.framing, count)
        result_size = result_length(channel.framing, count) + state_floats
        taken = sum(p.input_size for p in parts)
        written = sum(p.result_size for p in parts)
        if parts and (taken + input_size > arena.samples.shape[0]
                      or written + result_size > arena.result.shape[0]):
            return False
        if session.retry:
            session.retry.popleft()
        else:
            session.next_frame += count
        if session.has_work():
            self._round_robin[session.priority].append(session)
        if channel.state is not None:
            arena.samples[taken:taken + state_floats] = channel.state
        channel.input_for(channel_first, count, arena.samples[taken + state_floats:])
        kind = PLAIN if channel.state is None else channel.framing.context
        parts.append(Part(session, first, count, channel, channel_first, written, input_size,
                          result_size, kind))
        return True

    def _kill_hung_workers(self) -> None:
        """The watchdog: a worker past its segment's deadline is killed; its sentinel then
        fires and :meth:`_replace` starts another and runs the segment again."""
        for worker, task in work.overdue(self._workers):
            log.warning("worker process %s gave no result within %.1f s: killing it",
                        worker.process.pid, time.monotonic() - task.sent_at)
            worker.hung = True
            self.hung_workers += 1
            worker.process.kill()

    def _receive(self, worker: Worker) -> None:
        try:
            header = Header.unpack(worker.conn.recv_bytes())
            if header.kind == MessageKind.READY:
                worker.ready = True
                self._failed_starts = 0
                if all(w.ready for w in self._workers):
                    self._all_ready.set()
                return
            if header.kind == MessageKind.FAILED and not worker.ready:
                remote = worker.conn.recv_bytes().decode(errors="replace")
                self._mark_broken(f"workers cannot load {self.model_path}: {last_line(remote)}")
                return
            task = worker.task
            if (task is None or header.task_id != task.task_id
                    or (header.kind == MessageKind.RESULT and header.count != task.count)
                    or (header.kind == MessageKind.FAILED and header.count >= len(task.parts))):
                raise EOFError("out-of-step message")
            worker.task = None
            if header.kind == MessageKind.FAILED:
                remote = worker.conn.recv_bytes().decode(errors="replace")
                failed = task.parts[header.count]
                fail(failed.session.future, worker_failure(
                    f"the model failed: {last_line(remote)}", remote))
                for part in task.parts:  # the chunks taken with it are fine: run them again
                    if part is not failed:
                        self._run_again(part)
                return
            for part in task.parts:
                if not part.session.future.done():  # else cancelled or failed: dropped
                    # Straight from the arena into the job's output.
                    part.channel.store(part.channel_first, part.count,
                                       worker.arena.result[part.result_at:])
                    if part.kind != PLAIN:
                        end = part.result_at + part.result_size
                        part.channel.state_out = worker.arena.result[
                            end - self.state_size:end].copy()
        except (EOFError, OSError, TypeError, ValueError):
            self._replace(worker)
            return
        elapsed = time.monotonic() - task.sent_at
        self._seconds_per_frame = 0.9 * self._seconds_per_frame + 0.1 * elapsed / task.count
        self.frames_processed += task.count
        for part in task.parts:
            session = part.session
            if not session.future.done() and session.count_done(part.count):
                # The caller joins where segments meet: the collector does nothing that can
                # fail for one request. The caller may have cancelled meanwhile.
                with contextlib.suppress(InvalidStateError):
                    session.future.set_result(session.job)

    def _run_again(self, part: Part) -> None:
        """Queue a part's frames to run again, first in their session's turn."""
        session = part.session
        if session.future.done():
            return
        session.retry.append((part.first_frame, part.count))
        waiting = self._round_robin[session.priority]
        if session not in waiting:
            waiting.appendleft(session)

    def _replace(self, worker: Worker) -> None:
        """A worker died: fail the session it held and start another worker in its place."""
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        worker.conn.close()
        worker.process.join(1.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        task = worker.task
        if worker.hung and task is not None:
            how = f"gave no result within {task.deadline - task.sent_at:.1f} s and was killed"
        else:
            how = work.describe_exit(worker.process.exitcode)
        log.warning("worker process %s %s", worker.process.pid, how)
        for part in task.parts if task is not None else []:
            if worker.hung and part.first_frame not in part.session.retried:
                # Hung, not crashed: the block is likely fine, so it runs once more elsewhere.
                # (A block that crashes a worker is not retried: it could crash the next one.)
                part.session.retried.add(part.first_frame)
                self._run_again(part)
            else:
                fail(part.session.future, WorkerCrashed(
                    f"worker process {worker.process.pid} {how} while processing this "
                    f"request"))
        if self._closing:
            worker.arena.unlink()
            return
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= MAX_FAILED_STARTS:
                worker.arena.unlink()
                self._mark_broken(f"workers keep dying while loading {self.model_path} "
                                  f"(the last one {how})")
                return
        # The dead worker's arena serves its replacement: nothing else can write to it now.
        self._start_worker(worker.live_lane, worker.arena)
        self.restarts += 1

    def _spec(self, name: str) -> ArenaSpec:
        return ArenaSpec(name, self.framing.frame_length, self.framing.hop_length,
                         self.framing.window, self.max_segment_frames, self.framing.context,
                         self.state_size, MAX_CHUNKS_PER_TASK)

    def _start_worker(self, live_lane: bool, arena: Arena | None = None) -> None:
        if arena is None:
            arena = Arena.create(self._spec(next(self._arena_names)))
        self._workers.append(Worker.start(self._ctx, str(self.model_path), self.num_threads,
                                          self._spec(arena.memory.name), arena, live_lane,
                                          self.file_lane_nice,
                                          None if self.step_model_path is None
                                          else str(self.step_model_path)))

    def _stop_workers(self) -> None:
        for worker in self._workers:
            worker.send_stop()
        for worker in self._workers:
            worker.stop(WORKER_STOP_TIMEOUT_S)
            for session in worker.task.sessions if worker.task is not None else []:
                fail(session.future, EnhancerClosed("the enhancer was closed"))
        self._workers.clear()

    def _wake(self) -> None:
        # One byte until the collector reads it: it then takes every session queued so far.
        if self._wake_due:
            return
        self._wake_due = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

"""Supervision: the workers' lives, from spawn to stop.

Each worker is spawned on its *arena* (made once, then handed to its replacements) and says
READY once its model is loaded. The watchdog kills a worker that holds its task past the
deadline. An idle worker not heard from for ``HEARTBEAT_INTERVAL_S`` gets a heartbeat
(PING); one that is silent for the heartbeat timeout, its PING unanswered, is stopped or
hangs, and is killed too, so the pool is not ready until its replacement has loaded. A
worker that dies (its process sentinel fires, or its pipe breaks) is replaced: the sessions
it held fail with ``WorkerCrashed``, or, if it hung, its segments run once more elsewhere.
Workers that keep dying while they load break the pool (:class:`Supervisor` says why; the
pool fails every session), and so does one that found itself started by a script without the
``if __name__ == "__main__":`` guard (``BOOTSTRAP_EXIT_STATUS``).

Owned by the collector thread.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
import signal
import time
from pathlib import Path

from enhancer.backends.base import Session, fail
from enhancer.backends.pool.records import Arena, Task, Worker
from enhancer.backends.pool.scheduling import Scheduler
from enhancer.backends.pool.worker_process import (
    BOOTSTRAP_EXIT_STATUS,
    GUARD_ADVICE,
    ArenaSpec,
)
from enhancer.errors import EnhancerClosed, WorkerCrashed

log = logging.getLogger("enhancer.pool")

WORKER_STOP_TIMEOUT_S = 5.0
MAX_FAILED_STARTS = 3
# An idle worker silent this long gets a heartbeat (at most half the timeout), so one that
# stops is noticed within the timeout.
HEARTBEAT_INTERVAL_S = 0.5


class Supervisor:
    """The pool's worker processes: started, watched, replaced and stopped."""

    def __init__(self, model_path: Path, step_model_path: Path | None, num_threads: int,
                 arena_layout: ArenaSpec, arena_prefix: str, file_lane_nice: int,
                 scheduler: Scheduler, heartbeat_timeout_s: float) -> None:
        self.model_path = model_path
        self.step_model_path = step_model_path
        self.num_threads = num_threads
        self.file_lane_nice = file_lane_nice
        self.workers: list[Worker] = []
        self.restarts = 0
        self.hung_workers = 0
        self._arena_layout = arena_layout  # every arena's, but its name
        self._arena_names = (f"{arena_prefix}{n}" for n in itertools.count())
        self._scheduler = scheduler  # to run a hung worker's segments again
        self._failed_starts = 0
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._heartbeat_interval_s = min(HEARTBEAT_INTERVAL_S, heartbeat_timeout_s / 2)
        # A ping goes out after an interval of silence, so a worker silent for the timeout has
        # had the rest to answer; at least that long even when the collector pinged late.
        self._answer_within_s = heartbeat_timeout_s - self._heartbeat_interval_s
        self._ctx = multiprocessing.get_context("spawn")

    def start(self, live_lane: bool, arena: Arena | None = None) -> None:
        """Spawn a worker on ``arena`` (a new one if None); it says READY when loaded."""
        if arena is None:
            arena = Arena.create(self._spec(next(self._arena_names)))
        self.workers.append(Worker.start(
            self._ctx, str(self.model_path), self.num_threads, self._spec(arena.memory.name),
            arena, live_lane, self.file_lane_nice,
            None if self.step_model_path is None else str(self.step_model_path)))

    def _spec(self, name: str) -> ArenaSpec:
        return dataclasses.replace(self._arena_layout, name=name)

    def came_up(self, worker: Worker) -> bool:
        """``worker`` said READY; True when every worker has."""
        worker.ready = True
        self._failed_starts = 0
        return all(w.ready for w in self.workers)

    def held_sessions(self) -> list[Session]:
        """The sessions whose segments the workers hold now."""
        return [s for w in self.workers if w.task is not None for s in w.task.sessions]

    def time_to_next_check(self) -> float | None:
        """Seconds until the next thing to check: a held task's deadline, an idle worker's
        next heartbeat, or an unanswered one's timeout; None when there is nothing to check."""
        times = []
        for worker in self.workers:
            if worker.hung or not worker.ready:
                continue
            if worker.task is not None:
                times.append(worker.task.deadline)
            if worker.ping_sent_at is not None:
                times.append(worker.ping_sent_at + self._answer_within_s)
            elif worker.task is None:
                times.append(worker.last_heard + self._heartbeat_interval_s)
        return max(0.0, min(times) - time.monotonic()) if times else None

    def kill_hung_workers(self) -> None:
        """The watchdog: a worker past its task's deadline, or silent for the heartbeat
        timeout, is killed; its sentinel then fires and :meth:`replace` starts another
        and runs its segments again."""
        for worker, task in _overdue(self.workers):
            held = time.monotonic() - task.sent_at
            log.warning("worker process %s gave no result within %.1f s: killing it",
                        worker.process.pid, held)
            self.hung_workers += 1
            worker.kill(f"gave no result within {task.deadline - task.sent_at:.1f} s and "
                        f"was killed")
        for worker in self._silent(time.monotonic()):
            log.warning("worker process %s left its heartbeat unanswered (timeout %g s): "
                        "killing it", worker.process.pid, self.heartbeat_timeout_s)
            self.hung_workers += 1
            worker.kill(f"did not answer its heartbeat (timeout {self.heartbeat_timeout_s:g} s) "
                        f"and was killed")

    def _silent(self, now: float) -> list[Worker]:
        """The workers whose heartbeat is unanswered in time. A reply already in
        the pipe counts: the collector may be the one that was slow."""
        return [w for w in self.workers
                if not w.hung and w.ping_sent_at is not None
                and now - w.ping_sent_at > self._answer_within_s and not w.conn.poll(0)]

    def send_heartbeats(self) -> list[Worker]:
        """Ping the idle workers not heard from for the heartbeat interval; the workers
        whose pipe has broken (they are dead: to be replaced). When one is due, those at
        least half due are pinged with it, so the workers' heartbeats fall in step and an
        idle pool wakes the collector about twice an interval, not twice per worker."""
        now = time.monotonic()
        waiting = {w: now - w.last_heard for w in self.workers
                   if w.ready and w.task is None and w.ping_sent_at is None and not w.hung}
        if not any(silent >= self._heartbeat_interval_s for silent in waiting.values()):
            return []
        return [worker for worker, silent in waiting.items()
                if silent >= self._heartbeat_interval_s / 2 and not worker.send_ping(now)]

    def replace(self, worker: Worker, closing: bool) -> str | None:
        """A worker died: settle the sessions it held and start another in its place (none
        while ``closing``). Returns why the pool is broken if workers keep dying while they
        load, else None."""
        if worker not in self.workers:
            return None
        self.workers.remove(worker)
        how = _bury(worker)
        self._settle(worker, how)
        if closing:
            worker.arena.unlink()
            return None
        if not worker.ready and worker.process.exitcode == BOOTSTRAP_EXIT_STATUS:
            worker.arena.unlink()  # it would only do the same again
            return GUARD_ADVICE
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= MAX_FAILED_STARTS:
                worker.arena.unlink()
                return (f"workers keep dying while loading {self.model_path} "
                        f"(the last one {how})")
        # The dead worker's arena serves its replacement: nothing else can write to it now.
        self.start(worker.live_lane, worker.arena)
        self.restarts += 1
        return None

    def _settle(self, worker: Worker, how: str) -> None:
        """A dead worker's task: a hung worker's segments run once more elsewhere; a
        crashed worker's sessions fail."""
        for part in worker.task.parts if worker.task is not None else []:
            if worker.hung and part.first_frame not in part.session.retried:
                # Hung, not crashed: the block is likely fine, so it runs once more elsewhere.
                # (A block that crashes a worker is not retried: it could crash the next one.)
                part.session.retried.add(part.first_frame)
                self._scheduler.run_again(part)
            else:
                fail(part.session.future, WorkerCrashed(
                    f"worker process {worker.process.pid} {how} while processing this "
                    f"request"))

    def stop_all(self) -> None:
        """Stop every worker and free its arena; the sessions they held fail."""
        for worker in self.workers:
            worker.send_stop()
        for worker in self.workers:
            worker.stop(WORKER_STOP_TIMEOUT_S)
            for session in worker.task.sessions if worker.task is not None else []:
                fail(session.future, EnhancerClosed("the enhancer was closed"))
        self.workers.clear()


def _bury(worker: Worker) -> str:
    """Close a dead worker's pipe and reap its process; how it ended, in words."""
    worker.conn.close()
    worker.process.join(1.0)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join()
    how = worker.hung_how if worker.hung else describe_exit(worker.process.exitcode)
    if worker.process.exitcode != BOOTSTRAP_EXIT_STATUS:  # else the pool's error says why
        log.warning("worker process %s %s", worker.process.pid, how)
    return how


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def _overdue(workers: list[Worker]) -> list[tuple[Worker, Task]]:
    """The workers past their task's deadline, not yet killed for it, and the task."""
    now = time.monotonic()
    return [(w, w.task) for w in workers
            if w.task is not None and now > w.task.deadline and not w.hung]

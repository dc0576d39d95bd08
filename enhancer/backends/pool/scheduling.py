"""Scheduling: which session's frames go to which idle worker next, as one task each.

The collector takes each *session* off the *unprocessed frames queue* and hands it to the
:class:`Scheduler`, which keeps it in a round robin (live streams' before files') until every
one of its frames is in a task. Sessions take turns, so none starves; a stream's chunks go
to the *live lane* first; when chunks queue up, one task takes several (their share of the
idle workers, at most ``MAX_CHUNKS_PER_TASK``). A task's samples go straight into its
worker's arena; sending it is the messaging's part (:mod:`enhancer.backends.pool.messaging`).

Owned by the collector thread; nothing here touches a process or a pipe.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator

from enhancer.backends.base import Priority, Session
from enhancer.backends.pool.records import Arena, Part, Task, Worker
from enhancer.backends.pool.worker_process import PLAIN
from enhancer.model.grid import input_length, result_length

# Most stream chunks one task takes when chunks queue up: one wake-up and one round trip for
# all, yet a chunk waits for at most this many others before its result comes back.
MAX_CHUNKS_PER_TASK = 8
# A segment's deadline: the floor plus this many times its expected run time; generous, so a
# busy machine never kills a healthy worker, and a hung one is still caught within seconds.
DEADLINE_FACTOR = 50.0
# Within this long of a live chunk, file segments are cut to this many frames.
LIVE_RECENT_S, FILE_FRAMES_WHILE_LIVE = 1.0, 32
# A job's segments, at most (about 1.4 s of 48 kHz audio at hop 512).
JOB_FRAMES = 128


class Scheduler:
    """The sessions with frames left to send, and the tasks they are cut into."""

    def __init__(self, state_size: int, min_block_deadline_s: float,
                 seconds_per_frame: float) -> None:
        self.state_size = state_size  # floats of a stream step's state
        self.min_block_deadline_s = min_block_deadline_s
        # The model's speed, measured: a running average over the tasks run so far.
        self.seconds_per_frame = seconds_per_frame
        # Sessions with frames left to send, taking turns; live streams' before files'.
        self.round_robin: dict[Priority, deque[Session]] = {p: deque() for p in Priority}
        self.last_live = -LIVE_RECENT_S  # when a live chunk last came
        self._task_ids = itertools.count(1)

    def accept(self, session: Session) -> None:
        """A new session takes its turn after those waiting."""
        self.round_robin[session.priority].append(session)
        if session.priority == Priority.LIVE:
            self.last_live = time.monotonic()

    def tasks(self, workers: list[Worker]) -> Iterator[tuple[Worker, Task]]:
        """Give each idle worker the next segment, sessions taking turns so none starves;
        live chunks to the live lane first, file segments to the file lanes. When chunks
        queue up, a worker takes several at once (their share, at most
        ``MAX_CHUNKS_PER_TASK``). Each task is yielded as soon as its arena is written."""
        idle = [w for w in workers if w.ready and w.task is None]
        live = self.round_robin[Priority.LIVE]
        while idle:
            session = next_session(self.round_robin)
            if session is None:
                return
            worker = pick_worker(idle, session.priority, len(workers), self.last_live)
            if worker is None:
                self.round_robin[session.priority].appendleft(session)
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
                session = (next_session({Priority.LIVE: live})
                           if session.priority == Priority.LIVE and len(parts) < share
                           else None)
            yield worker, self._task(parts)

    def _task(self, parts: list[Part]) -> Task:
        """A task of ``parts``, its deadline set by the model's measured speed. While streams
        are live, a job's runs in the background (the idle scheduling class); otherwise as a
        file's, so other work on the machine cannot starve a job."""
        now = time.monotonic()
        background = (now - self.last_live < LIVE_RECENT_S
                      and all(p.session.priority == Priority.JOB for p in parts))
        return Task(next(self._task_ids), parts, now, now + self.min_block_deadline_s
                    + DEADLINE_FACTOR * sum(p.count for p in parts) * self.seconds_per_frame,
                    background)

    def _take_part(self, session: Session, arena: Arena, parts: list[Part]) -> bool:
        """Add the session's next segment to the task's ``parts`` and its samples to the
        arena, after those of the parts before; False if the arena has no room left for it."""
        if session.retry:
            first, count = session.retry[0]
        else:
            first = session.next_frame
            _, _, count = session.job.locate(first, segment_limit(session, self.last_live))
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
            self.round_robin[session.priority].append(session)
        if channel.state is not None:
            arena.samples[taken:taken + state_floats] = channel.state
        channel.input_for(channel_first, count, arena.samples[taken + state_floats:])
        kind = PLAIN if channel.state is None else channel.framing.context
        parts.append(Part(session, first, count, channel, channel_first, written, input_size,
                          result_size, kind))
        return True

    def run_again(self, part: Part) -> None:
        """Queue a part's frames to run again, first in their session's turn."""
        session = part.session
        if session.future.done():
            return
        session.retry.append((part.first_frame, part.count))
        waiting = self.round_robin[session.priority]
        if session not in waiting:
            waiting.appendleft(session)

    def measured(self, task: Task) -> None:
        """A task's result came back: fold its run time into the model's measured speed."""
        elapsed = time.monotonic() - task.sent_at
        self.seconds_per_frame = 0.9 * self.seconds_per_frame + 0.1 * elapsed / task.count

    def drop_waiting(self) -> list[Session]:
        """Every session still waiting for its turn, live ones first; none waits after."""
        waiting = [session for sessions in self.round_robin.values() for session in sessions]
        for sessions in self.round_robin.values():
            sessions.clear()
        return waiting


def segment_limit(session: Session, last_live: float) -> int:
    """While streams are live, file segments are short, so a chunk never waits long for a
    worker to come free; a job's always are, so neither does a request."""
    if session.priority == Priority.JOB:
        return min(session.segment_frames, JOB_FRAMES)
    if session.priority != Priority.LIVE and time.monotonic() - last_live < LIVE_RECENT_S:
        return min(session.segment_frames, FILE_FRAMES_WHILE_LIVE)
    return session.segment_frames


def pick_worker(idle: list[Worker], priority: Priority, workers: int,
                last_live: float) -> Worker | None:
    """The idle worker a segment of ``priority`` goes to, or None if it must wait.

    One worker is the *live lane*: a stream's chunk goes there first, and while streams are
    live no file segment does (with two or more workers), so a chunk never waits behind a
    file. The others are *file lanes*, run at a lower CPU priority (``nice``), so on a busy
    machine a long file takes the cores the live lane, the API and its clients leave free;
    while streams are live, a job's segments run at the idle scheduling class
    (``Task.background``), below everything.
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

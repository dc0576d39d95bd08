"""The Ray Serve backend (``BACKEND=ray``): segments of audio run on Serve replicas, anywhere.

Data flow::

    API process (Ray driver)                                Serve replicas (any node)
    ────────────────────────                                ─────────────────────────
    decode ─► resample ─► job ─► run() ─► dispatcher ─► DeploymentHandle ─► ModelReplica.run:
                                          (one thread,   (Serve routes to     frame, window,
    encode ◄─ resample ◄─ join edges ◄─ future ◄─ asyncio; the least busy      model, overlap-add
                                          jobs take      replica)             (run_segment)
                                          turns)

Where the work happens, and why:

- *Decoding, resampling and the joins between segments stay in the API process*, exactly as
  with the local pool (:mod:`enhancer.audio_enhancer`, :mod:`enhancer.model.grid`). The upload's
  bytes are already there; resampling is vectorised work costing milliseconds for a minute
  of audio, far less than one more trip of the audio over the network; and joining where
  two segments meet needs both, so it belongs where the whole request is.
- *Framing, windowing, the model and overlap-add inside a segment run in the replicas*
  (:func:`enhancer.model.grid.run_segment`, one :class:`~enhancer.model.runner.ModelRunner`
  each), as in the local workers: a segment travels as its samples, not as overlapping
  frames, so a 50 %-overlap model ships each sample once, not twice. A replica sees only
  "samples in, slots and edge frames out", so any replica can take any segment of any
  request or stream, and one that dies loses only the segments it held.
- *The model's bytes travel in the deployment's arguments*, so a machine that joins the
  cluster needs the project's code (``pip install .``) but not its model files.
- *Segments are large*, since a call to a replica costs about 3 ms: see
  :func:`~enhancer.backends.ray.records.replica_segment_frames`. A stream's chunk is sent as
  it comes.

The dispatcher keeps at most ``max_ongoing_requests`` segments per replica the deployment
may have (its target, or its autoscaling maximum) in flight and sends the jobs' next segments
in turn, live streams' first (:class:`~enhancer.backends.base.Priority`), so a long request does
not starve short ones and Serve's own queue stays short (the autoscaler still sees the
demand). A stream's state (the samples where its chunks meet, and the model's state from its
stream step twin) lives in the API process and travels with each chunk
(``ModelReplica.run_step``: the state in, the state after it out), so streams need no replica
affinity and a replica that dies loses only the chunk it held.

The Serve side (replicas, the applications, the error mapping, joining the cluster) is
:mod:`enhancer.backends.ray.deployment`, whose :func:`model_app` the config files name
(``enhancer.backends.ray.deployment:model_app``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, InvalidStateError
from pathlib import Path

import numpy as np

from enhancer.backends.base import Priority, Progress, Session, fail
from enhancer.backends.ray.deployment import (
    DEPLOYMENT_NAME,
    STATUS_PERIOD_S,
    RayOptions,
    app_name_for,
    cluster_cpus,
    connect,
    delete_application,
    disconnect,
    library_error,
    model_app,
    start_application,
)
from enhancer.backends.ray.records import DeploymentState, plain, replica_segment_frames
from enhancer.errors import (
    EnhancerClosed,
    EnhancerError,
    ModelError,
    PoolBroken,
)
from enhancer.model.framing import Framing
from enhancer.model.grid import ChannelJob, Job, input_length, stream_step_refusal

# The Serve config files' import paths name this module.
__all__ = ["RayOptions", "RayServeBackend", "library_error", "model_app"]

log = logging.getLogger("enhancer.ray")

class RayServeBackend:
    """Run segments on the replicas of a Ray Serve deployment (the ``Backend`` protocol).

    Parameters
    ----------
    model_path : Path
        The ``.tflite`` file; its bytes are sent to the replicas.
    model_name : str
        The model's name (its card's); the application is ``enhancer-<model_name>``.
    framing : Framing
        The model's frame, hop and window (from its card), for the replicas.
    options : RayOptions
        The cluster and the deployment's shape.

    Raises ``ModelError`` when the application is not running with its replicas within
    ``options.start_timeout_s`` (for example: the cluster has too few CPUs), and
    ``ImportError`` when Ray Serve is not installed.
    """

    def __init__(self, model_path: str | Path, model_name: str, framing: Framing,
                 options: RayOptions, step_model_path: str | Path | None = None,
                 state_size: int = 0) -> None:
        self.model_path = Path(model_path)
        # The model's stream step twin: streams' chunks after the first carry their state,
        # not their look-back frames, as with the local pool.
        self.runs_stream_steps = step_model_path is not None
        self.app_name = app_name_for(model_name)
        self.framing = framing
        self.options = options
        self.frames_processed = 0
        self.restarts = 0
        self.segments_by_node: Counter[str] = Counter()
        """Segments run by the replicas of each node (node ID), for tests and diagnostics."""
        self.state = DeploymentState(window=self._window_for(options.most_replicas,
                                                             options.max_ongoing_requests))
        self._closed = False
        self._broken_reason: str | None = None
        # Jobs waiting for their next segment to be sent, by priority (live first).
        self._waiting: dict[Priority, deque[Session]] = {p: deque() for p in Priority}
        self._in_flight = 0
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()

        connect(options.address)
        try:
            application = start_application(
                self.model_path, self.app_name, self.framing, options,
                None if step_model_path is None else Path(step_model_path), state_size)
            self._handle = application.options(method_name="run")
            self._step_handle = application.options(method_name="run_step")
            self._wait_until_running()
        except BaseException:
            self._stop.set()
            delete_application(self.app_name, self.options)
            disconnect()
            raise
        self._dispatcher = threading.Thread(target=self._loop.run_forever, daemon=True,
                                            name=f"enhancer-ray-{model_name}")
        self._dispatcher.start()
        self._monitor = threading.Thread(target=self._watch, daemon=True,
                                         name=f"enhancer-ray-status-{model_name}")
        self._monitor.start()
        atexit.register(self.close)

    # ------------------------------------------------------------------------- start

    @staticmethod
    def _window_for(replicas: int, max_ongoing: int) -> int:
        return max(1, replicas) * max(1, max_ongoing)

    def _wait_until_running(self) -> None:
        deadline = time.monotonic() + self.options.start_timeout_s
        while True:
            self._refresh()
            if self.is_ready:
                return
            if self.state.app_status == "DEPLOY_FAILED" or time.monotonic() > deadline:
                raise ModelError(
                    f"the Ray Serve application {self.app_name} did not start "
                    f"({self.state.app_status}, {len(self.state.running)} of "
                    f"{self.state.target} replicas running"
                    f"{'; ' + self.state.message if self.state.message else ''}); "
                    f"each replica needs {self.options.cpus_per_replica} CPU: "
                    f"{cluster_cpus()}")
            time.sleep(0.2)

    # ------------------------------------------------------------------------- the protocol

    def run(self, job: Job, session_id: str, progress: Progress | None = None,
            priority: Priority = Priority.FILE) -> Future[Job]:
        """Queue every frame of ``job``; the future completes with the job, its results in.

        Live jobs' segments are sent before file jobs'; within a priority, jobs take turns
        segment by segment.
        """
        future: Future[Job] = Future()
        if self._closed:
            future.set_exception(EnhancerClosed("the enhancer is closed"))
            return future
        if self._broken_reason is not None:
            future.set_exception(PoolBroken(self._broken_reason))
            return future
        # A stream step chunk goes in one call, whatever its size: its state goes through it.
        refusal = stream_step_refusal(job, self.runs_stream_steps, job.num_frames)
        if refusal is not None:
            future.set_exception(ValueError(refusal))
            return future
        session = Session(session_id, job, future, progress, priority, segment_frames=1)
        try:
            self._loop.call_soon_threadsafe(self._enqueue, session)
        except RuntimeError:  # the loop closed in between
            fail(future, EnhancerClosed("the enhancer is closed"))
        return future

    @property
    def is_ready(self) -> bool:
        """The application is RUNNING with (at least) its target number of replicas."""
        state = self.state
        return (not self._closed and self._broken_reason is None
                and state.app_status == "RUNNING" and len(state.running) >= state.target)

    @property
    def worker_pids(self) -> list[int]:
        """Process IDs of the running replicas (they may be on other machines)."""
        return [pid for _, pid in self.state.running.values()]

    @property
    def in_flight(self) -> int:
        """Segments sent to the deployment and not back yet."""
        return self._in_flight

    @property
    def replica_nodes(self) -> dict[str, str]:
        """Replica ID → node ID of every running replica."""
        return {replica: node for replica, (node, _) in self.state.running.items()}

    def close(self) -> None:
        """Fail what is queued or running with ``EnhancerClosed``; delete the application if
        this process deployed it; leave the cluster if this process joined it."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._stop.set()
        done = threading.Event()

        def fail_all() -> None:
            self._fail_waiting(EnhancerClosed("the enhancer was closed"))
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            done.set()

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fail_all)
            done.wait(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._dispatcher.join(5)
        self._monitor.join(5)
        if not self._dispatcher.is_alive():
            self._loop.close()
        delete_application(self.app_name, self.options)
        disconnect()

    # ------------------------------------------------------------------------- dispatcher

    def _enqueue(self, session: Session) -> None:
        if self._closed:
            fail(session.future, EnhancerClosed("the enhancer is closed"))
            return
        job = session.job
        streaming = any(c.state is not None for c in job.channels)
        session.segment_frames = (job.num_frames if streaming else replica_segment_frames(
            job.num_frames, len(self.state.running), self.options.frames_per_call))
        self._waiting[session.priority].append(session)
        self._pump()

    def _next_session(self) -> Session | None:
        for waiting in self._waiting.values():  # in priority order
            while waiting:
                session = waiting.popleft()
                if not session.future.done():  # else cancelled, or failed by another segment
                    return session
        return None

    def _pump(self) -> None:
        """Send the jobs' next segments, in turn, while the window has room."""
        while self._in_flight < self.state.window:
            session = self._next_session()
            if session is None:
                return
            try:
                channel, first, count = session.job.locate(session.next_frame,
                                                           session.segment_frames)
                samples = np.empty(input_length(channel.framing, count), np.float32)
                channel.input_for(first, count, samples)
            except Exception as exc:  # a bad job fails alone; the dispatcher goes on
                fail(session.future, ModelError(f"cannot cut {session.session_id} into "
                                                 f"segments: {type(exc).__name__}: {exc}"))
                continue
            session.next_frame += count
            if session.next_frame < session.job.num_frames:
                self._waiting[session.priority].append(session)
            self._in_flight += 1
            self._loop.create_task(self._call(session, channel, first, count, samples))

    async def _call(self, session: Session, channel: ChannelJob, first: int, count: int,
                    samples: np.ndarray) -> None:
        try:
            state_after = None
            if channel.state is None:
                result, node_id, _pid = await self._handle.remote(samples, count)
            else:
                result, state_after, node_id, _pid = await self._step_handle.remote(
                    samples, count, channel.framing.context, channel.state)
        except asyncio.CancelledError:  # closed, or the application is gone
            reason = self._broken_reason
            fail(session.future, PoolBroken(reason) if reason and not self._closed
                  else EnhancerClosed("the enhancer was closed"))
        except BaseException as exc:  # every failure fails this session only
            error = library_error(exc, self.app_name)
            if not session.future.done():
                log.warning("%s: %s", session.session_id, error)
            fail(session.future, error)
        else:
            self.frames_processed += count
            self.segments_by_node[node_id] += 1
            if not session.future.done():
                try:
                    channel.store(first, count, result)
                    if state_after is not None:
                        channel.state_out = np.asarray(state_after, np.float32)
                except Exception as exc:  # fails this job only
                    fail(session.future, ModelError(
                        f"a replica of {self.app_name} returned an unusable result: "
                        f"{type(exc).__name__}: {exc}"))
                else:
                    if session.count_done(count):
                        with contextlib.suppress(InvalidStateError):
                            session.future.set_result(session.job)
        finally:
            self._in_flight -= 1
            if not self._closed:
                self._pump()

    # ------------------------------------------------------------------------- monitor

    def _watch(self) -> None:
        while not self._stop.wait(STATUS_PERIOD_S):
            try:
                self._refresh()
            except Exception:  # the cluster may be briefly unreachable; try again later
                log.debug("reading the state of %s failed", self.app_name, exc_info=True)

    def _refresh(self) -> None:
        """Read the application's state from the Serve controller (one call, ~5 ms)."""
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        details = client.get_serve_details() if client is not None else {}
        app = details.get("applications", {}).get(self.app_name)
        previous = self.state
        if app is None:
            self.state = DeploymentState(window=previous.window)
        else:
            deployment = app.get("deployments", {}).get(DEPLOYMENT_NAME, {})
            config = deployment.get("deployment_config", {})
            autoscaling = config.get("autoscaling_config") or {}
            most = autoscaling.get("max_replicas") or config.get("num_replicas")
            if not isinstance(most, int):  # "auto", or missing: what this process asked for
                most = self.options.most_replicas
            running = {r["replica_id"]: (r["node_id"], r["pid"])
                       for r in deployment.get("replicas", [])
                       if plain(r.get("state")) == "RUNNING"}
            self.state = DeploymentState(
                app_status=plain(app.get("status", "")),
                message=app.get("message", "") or deployment.get("message", ""),
                target=int(deployment.get("target_num_replicas", 0)),
                running=running,
                window=self._window_for(most, int(config.get("max_ongoing_requests", 1))))
            # Replicas that stopped running without the target shrinking were replaced.
            gone = set(previous.running) - set(running)
            shrunk = max(0, previous.target - self.state.target)
            self.restarts += max(0, len(gone) - shrunk)
        if self.state.app_status == "DEPLOY_FAILED":
            self._broken_reason = (f"the Ray Serve application {self.app_name} failed to "
                                   f"deploy: {self.state.message}")
        elif previous.app_status == "RUNNING" and app is None and not self._closed:
            self._broken_reason = f"the Ray Serve application {self.app_name} was deleted"
        elif self.state.app_status == "RUNNING":
            self._broken_reason = None
        if self._broken_reason is not None and not self._closed:
            reason = self._broken_reason
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._break, reason)

    def _break(self, reason: str) -> None:
        """Fail every job: the waiting ones, and those whose segments Serve holds for an
        application that no longer exists (they would wait for a replica forever)."""
        self._fail_waiting(PoolBroken(reason))
        for task in asyncio.all_tasks(self._loop):
            task.cancel()

    def _fail_waiting(self, error: EnhancerError) -> None:
        for waiting in self._waiting.values():
            for session in waiting:
                fail(session.future, error)
            waiting.clear()

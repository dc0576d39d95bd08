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
  with the local pool (:mod:`enhancer.enhancer`, :mod:`enhancer.segments`). The upload's
  bytes are already there; resampling is vectorised work costing milliseconds for a minute
  of audio, far less than one more trip of the audio over the network; and joining where
  two segments meet needs both, so it belongs where the whole request is.
- *Framing, windowing, the model and overlap-add inside a segment run in the replicas*
  (:func:`enhancer.segments.run_segment`, one :class:`~enhancer.model_runner.ModelRunner`
  each), as in the local workers: a segment travels as its samples, not as overlapping
  frames, so a 50 %-overlap model ships each sample once, not twice. A replica sees only
  "samples in, slots and edge frames out", so any replica can take any segment of any
  request or stream, and one that dies loses only the segments it held.
- *The model's bytes travel in the deployment's arguments*, so a machine that joins the
  cluster needs the project's code (``pip install .``) but not its model files.
- *Segments are large*: a call to a replica costs about 3 ms (routing, the object store,
  the reply), so a job is cut into segments of at least ``frames_per_call`` frames (256:
  131 k samples, 2.7 s at 48 kHz, for the denoiser's 512-sample hop), as few as give every
  replica the same number (:func:`segment_frames`); a job too short for that is spread over
  the replicas in smaller ones (never under 64 frames), which costs a call or two but not a
  replica's idle time. A stream's chunk (a hop or a few) is sent as it comes and pays the
  3 ms once.

The dispatcher keeps at most ``max_ongoing_requests`` segments per replica the deployment
may have (its target, or its autoscaling maximum) in flight and sends the jobs' next segments
in turn, live streams' first (:class:`~enhancer.backend.Priority`), so a long request does
not starve short ones and Serve's own queue stays short (the autoscaler still sees the
demand). A stream's state (the samples where its chunks meet) lives in the API process and
the shipped models are stateless, so streams need no replica affinity.

Errors map to the library's (:func:`library_error`): a replica that died holding a segment
(``ActorDiedError``/``RayActorError``, or a ``RayTaskError`` caused by one) fails that
segment's request with :class:`WorkerCrashed` (503; Serve replaces the replica by itself);
Serve's backpressure (``BackPressureError``, beyond ``max_queued_requests``) is
:class:`Overloaded` (503 with ``Retry-After``); the model failing inside a replica is
:class:`ModelError`; an application that failed to deploy or was deleted is
:class:`PoolBroken`.

``ray`` is imported only here, and only when this backend starts, so the default install
and ``make run`` never need it (``pip install -r requirements-ray.txt``).

Two ways to own the Serve applications (``RayOptions.deploy``):

- ``deploy=True`` (``RAY_DEPLOY=true``, the default): the API process deploys one application
  per model, ``enhancer-<model name>``, with the ``RAY_*`` settings, and deletes it on close.
- ``deploy=False``: the applications come from ``deploy/serve_config.yaml`` (``serve deploy``,
  or KubeRay's ``RayService``); the backend attaches to them by name and waits for them.
  :func:`model_app` and :func:`api_app` are that file's import paths.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import os
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enhancer.backend import Priority, Progress
from enhancer.errors import (
    EnhancerClosed,
    EnhancerError,
    ModelError,
    Overloaded,
    PoolBroken,
    WorkerCrashed,
)
from enhancer.framing import Framing
from enhancer.segments import ChannelJob, Job, input_length, result_length, run_segment

if TYPE_CHECKING:
    from enhancer.settings import Settings

log = logging.getLogger("enhancer.ray")

DEPLOYMENT_NAME = "ModelReplica"
APP_PREFIX = "enhancer-"
STATUS_PERIOD_S = 1.0
"""How often the backend reads the deployment's state (readiness, replicas, restarts)."""
INSTALL_HINT = "BACKEND=ray needs Ray Serve: pip install -r requirements-ray.txt"


def app_name_for(model_name: str) -> str:
    """The Serve application that serves the model named ``model_name`` (its card's name)."""
    return f"{APP_PREFIX}{model_name}"


@dataclass(frozen=True)
class RayOptions:
    """How the Ray backend reaches its cluster and shapes its deployment (``RAY_*`` settings).

    ``max_replicas`` 0 runs a fixed ``replicas``; above 0 Serve autoscales between
    ``min_replicas`` and ``max_replicas``, starting from ``replicas`` (kept within them).
    """

    address: str = ""
    """Ray cluster address; empty: connect to the machine's running cluster, else start one."""
    replicas: int = 1
    cpus_per_replica: float = 1.0
    min_replicas: int = 0
    max_replicas: int = 0
    max_ongoing_requests: int = 2
    """Segments a replica holds at once: one running, one arriving."""
    max_queued_requests: int = -1
    """Segments waiting in this process's Serve handle before ``Overloaded``; -1: no limit.
    The dispatcher sends no more than the replicas can hold, so these wait only while
    replicas are missing (dead, or not yet scaled up)."""
    deploy: bool = True
    frames_per_call: int = 256
    num_threads: int = 1
    start_timeout_s: float = 120.0
    health_check_period_s: float = 2.0
    """How soon Serve notices a dead replica and starts another (Serve's default is 10 s)."""

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.cpus_per_replica <= 0 or self.frames_per_call < 1:
            raise ValueError(f"invalid Ray options: {self}")
        if self.max_replicas and not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"Ray autoscaling needs 0 <= min_replicas <= max_replicas, got "
                             f"{self.min_replicas} and {self.max_replicas}")
        if self.max_ongoing_requests < 1 or self.max_queued_requests < -1:
            raise ValueError(f"invalid Ray queue limits: {self}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RayOptions:
        return cls(address=settings.RAY_ADDRESS, replicas=settings.RAY_REPLICAS,
                   cpus_per_replica=settings.RAY_CPUS_PER_REPLICA,
                   min_replicas=settings.RAY_MIN_REPLICAS,
                   max_replicas=settings.RAY_MAX_REPLICAS,
                   max_ongoing_requests=settings.RAY_MAX_ONGOING_REQUESTS,
                   max_queued_requests=settings.RAY_MAX_QUEUED_REQUESTS,
                   deploy=settings.RAY_DEPLOY)

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas > 0

    @property
    def most_replicas(self) -> int:
        return self.max_replicas if self.autoscaling else self.replicas

    def deployment_options(self) -> dict[str, Any]:
        """The Serve deployment options these settings give (``Deployment.options``)."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.cpus_per_replica},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": self.health_check_period_s,
            "graceful_shutdown_wait_loop_s": 0.2,
            "graceful_shutdown_timeout_s": 5.0,
            # One log line per segment would drown everything else.
            "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
        }
        if self.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": min(max(self.replicas, self.min_replicas),
                                        self.max_replicas)}
        else:
            options["num_replicas"] = self.replicas
        return options


# ----------------------------------------------------------------------------------- replicas


class ModelReplica:
    """A Serve replica's state: one LiteRT interpreter, loaded from the model's bytes.

    Serve runs a replica's synchronous methods on a thread pool, and an interpreter is not
    thread-safe, so segments take turns on a lock (``max_ongoing_requests`` > 1 only overlaps
    a segment's transfer with the previous one's run).
    """

    def __init__(self, model: bytes, frame_length: int, hop_length: int, window: str,
                 num_threads: int = 1) -> None:
        import ray

        from enhancer.model_runner import ModelRunner

        self._framing = Framing(frame_length, hop_length, window)
        # ModelRunner reads a file; the interpreter maps it, so the file can go at once.
        with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
            file.write(model)
            file.flush()
            self._runner = ModelRunner(file.name, num_threads)
        self._lock = threading.Lock()
        self._node_id = ray.get_runtime_context().get_node_id()

    def run(self, samples: np.ndarray, count: int) -> tuple[np.ndarray, str, int]:
        """A segment of ``count`` frames, given as its samples, in; its result out
        (:func:`enhancer.segments.run_segment`), with the node and process it ran in."""
        result = np.empty(result_length(self._framing, count), np.float32)
        with self._lock:
            run_segment(self._runner.run, self._framing, samples, count, result)
        return result, self._node_id, os.getpid()


def model_application(model: bytes, framing: Framing, options: RayOptions) -> Any:
    """The Serve application of one model: ``ModelReplica`` with ``options``' settings."""
    from ray import serve

    deployment = serve.deployment(name=DEPLOYMENT_NAME, **options.deployment_options())
    return deployment(ModelReplica).bind(model, framing.frame_length, framing.hop_length,
                                         framing.window, options.num_threads)


def model_app(args: dict[str, Any]) -> Any:
    """``serve build``/config import path: ``enhancer.ray_backend:model_app``.

    ``args``: ``model_path`` (relative: from the project folder, or the installed package's
    models by file name; the card beside it gives the framing), and optionally
    ``num_threads`` and ``sample_rate`` (for a model without a card). Replicas, CPUs and
    queue limits come from the config's ``deployments`` section, which overrides the
    defaults here.
    """
    from ray import serve

    from enhancer.model_card import framing_for, load_card
    from enhancer.model_runner import ModelRunner
    from enhancer.paths import PROJECT_DIR, SHIPPED_MODELS_DIR

    path = Path(args["model_path"])
    if not path.is_absolute():  # from the project folder, else the installed package's models
        path = (PROJECT_DIR / path if (PROJECT_DIR / path).is_file()
                else SHIPPED_MODELS_DIR / path.name)
    framing = framing_for(load_card(path, int(args.get("sample_rate", 48000))),
                          ModelRunner(path).frame_length)
    options = RayOptions().deployment_options()
    del options["num_replicas"]  # the config's own num_replicas or autoscaling_config decides
    deployment = serve.deployment(name=DEPLOYMENT_NAME, **options)
    return deployment(ModelReplica).bind(path.read_bytes(), framing.frame_length,
                                         framing.hop_length, framing.window,
                                         int(args.get("num_threads", 1)))


class ApiReplica:
    """The API's Serve replica: all it does is :func:`api_app`'s FastAPI app."""


def api_app(args: dict[str, Any]) -> Any:
    """Config import path ``enhancer.ray_backend:api_app``: the HTTP API as a Serve ingress.

    Each replica builds the FastAPI app of :mod:`service.app` from its own environment (set
    ``BACKEND=ray`` and ``RAY_DEPLOY=false`` in the config's ``runtime_env``), so the API runs
    inside the cluster (on Kubernetes, behind the RayService's serve service) and sends
    segments to the model applications by handle. The one place the library reaches into the
    service, lazily, so that the config file needs no other module.
    """
    from ray import serve

    def build() -> Any:
        from service.app import create_app

        return create_app()

    return serve.deployment(name="Api")(serve.ingress(build)(ApiReplica)).bind()


# ----------------------------------------------------------------------------------- errors


def library_error(exc: BaseException, app_name: str) -> EnhancerError:
    """The library error a Ray or Serve exception from one segment stands for."""
    from ray import exceptions as rx
    from ray.serve import exceptions as sx

    if isinstance(exc, EnhancerError) and not isinstance(exc, rx.RayTaskError):
        return exc
    if isinstance(exc, rx.RayTaskError):
        cause = exc.cause
        if isinstance(cause, rx.RayError | sx.RayServeException):
            return library_error(cause, app_name)
        if isinstance(cause, EnhancerError):
            return cause
        return ModelError(f"the model failed on a replica of {app_name}: "
                          f"{type(cause).__name__}: {cause}")
    if isinstance(exc, sx.BackPressureError):
        return Overloaded(f"the Ray Serve deployment {app_name} is overloaded ({exc}); "
                          f"try again shortly")
    if isinstance(exc, sx.DeploymentUnavailableError):
        return PoolBroken(f"the Ray Serve application {app_name} is unavailable: "
                          f"{exc.message}")
    if isinstance(exc, rx.RayActorError | sx.ReplicaUnavailableError | rx.NodeDiedError
                  | rx.WorkerCrashedError | rx.ObjectLostError):
        reason = _first_line(exc)
        return WorkerCrashed(f"a Ray Serve replica of {app_name} died while it held part of "
                             f"this request ({type(exc).__name__}{': ' if reason else ''}"
                             f"{reason}); Serve starts a replacement, try again")
    if isinstance(exc, rx.RayError | sx.RayServeException):
        return WorkerCrashed(f"Ray failed a segment of this request on {app_name}: "
                             f"{type(exc).__name__}: {_first_line(exc)}")
    return ModelError(f"a segment of this request failed on {app_name}: "
                      f"{type(exc).__name__}: {exc}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


# ----------------------------------------------------------------------------------- the driver

_connection_lock = threading.Lock()
_connection = {"users": 0, "owned": False}


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return ray, serve


def _connect(address: str) -> None:
    """Join the Ray cluster (or start one) unless this process already has; count users."""
    ray, _ = _import_ray()
    with _connection_lock:
        if not ray.is_initialized():
            try:
                ray.init(address=address or None, logging_level=logging.WARNING,
                         namespace="audio-enhancer")
            except ConnectionError as exc:
                raise ConnectionError(
                    f"cannot join the Ray cluster at {address or 'this machine'}: {exc}. A "
                    f"cluster with token authentication (Ray's default) needs, for an explicit "
                    f"address, RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or "
                    f"~/.ray/auth_token (`ray get-auth-token` on the head prints it)") from exc
            _connection["owned"] = True
        _connection["users"] += 1


def _disconnect() -> None:
    """Leave the cluster when the last backend that joined it closes (if it joined it)."""
    ray, _ = _import_ray()
    with _connection_lock:
        _connection["users"] -= 1
        if _connection["users"] == 0 and _connection["owned"]:
            _connection["owned"] = False
            ray.shutdown()


MIN_SEGMENT_FRAMES = 64


def segment_frames(num_frames: int, replicas: int, frames_per_call: int) -> int:
    """Frames per segment for a job: every replica gets the same number of segments, each of
    at least ``frames_per_call`` frames when the job is that long (else at least
    ``MIN_SEGMENT_FRAMES``). 1210 frames on 2 replicas: 4 of 303, not 5 of 256 (3 rounds on
    one replica while the other idles for one)."""
    replicas = max(1, replicas)
    rounds = max(1, num_frames // (replicas * frames_per_call))
    size = math.ceil(num_frames / (replicas * rounds))
    return max(1, min(num_frames, max(size, MIN_SEGMENT_FRAMES)))


@dataclass(eq=False)
class _Session:
    """One job on its way through the replicas."""

    session_id: str
    job: Job
    future: Future[Job]
    progress: Progress | None
    priority: Priority = Priority.FILE
    segment_frames: int = 1
    next_frame: int = 0
    frames_done: int = 0


@dataclass
class DeploymentState:
    """What the last look at the Serve application found."""

    app_status: str = "NOT_STARTED"
    message: str = ""
    target: int = 0
    running: dict[str, tuple[str, int]] = field(default_factory=dict)
    """replica ID → (node ID, pid) of every RUNNING replica."""
    window: int = 1


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
                 options: RayOptions) -> None:
        self.model_path = Path(model_path)
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
        self._waiting: dict[Priority, deque[_Session]] = {p: deque() for p in Priority}
        self._in_flight = 0
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()

        _connect(options.address)
        try:
            self._handle = self._start_application().options(method_name="run")
            self._wait_until_running()
        except BaseException:
            self._stop.set()
            self._delete_application()
            _disconnect()
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

    def _start_application(self) -> Any:
        _, serve = _import_ray()
        if not self.options.deploy:
            return serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=self.app_name,
                                               _check_exists=False)
        from ray.serve import RunTarget

        # Serve with no HTTP proxies, unless it already runs: this process calls by handle.
        serve.start(proxy_location="Disabled")
        app = model_application(self.model_path.read_bytes(), self.framing, self.options)
        (handle,) = serve.run_many([RunTarget(target=app, name=self.app_name,
                                              route_prefix=None)],
                                   wait_for_applications_running=False)
        return handle

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
                    f"{self._cluster_cpus()}")
            time.sleep(0.2)

    def _cluster_cpus(self) -> str:
        ray, _ = _import_ray()
        try:
            return (f"the cluster has {ray.cluster_resources().get('CPU', 0):g} CPUs, "
                    f"{ray.available_resources().get('CPU', 0):g} free")
        except Exception as exc:  # only words for an error message
            return f"cluster resources unknown ({exc})"

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
        session = _Session(session_id, job, future, progress, priority)
        try:
            self._loop.call_soon_threadsafe(self._enqueue, session)
        except RuntimeError:  # the loop closed in between
            _fail(future, EnhancerClosed("the enhancer is closed"))
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
        self._delete_application()
        _disconnect()

    # ------------------------------------------------------------------------- dispatcher

    def _enqueue(self, session: _Session) -> None:
        if self._closed:
            _fail(session.future, EnhancerClosed("the enhancer is closed"))
            return
        session.segment_frames = segment_frames(session.job.num_frames,
                                                len(self.state.running),
                                                self.options.frames_per_call)
        self._waiting[session.priority].append(session)
        self._pump()

    def _next_session(self) -> _Session | None:
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
                samples = np.empty(input_length(self.framing, count), np.float32)
                channel.input_for(first, count, samples)
            except Exception as exc:  # a bad job fails alone; the dispatcher goes on
                _fail(session.future, ModelError(f"cannot cut {session.session_id} into "
                                                 f"segments: {type(exc).__name__}: {exc}"))
                continue
            session.next_frame += count
            if session.next_frame < session.job.num_frames:
                self._waiting[session.priority].append(session)
            self._in_flight += 1
            self._loop.create_task(self._call(session, channel, first, count, samples))

    async def _call(self, session: _Session, channel: ChannelJob, first: int, count: int,
                    samples: np.ndarray) -> None:
        try:
            result, node_id, _pid = await self._handle.remote(samples, count)
        except asyncio.CancelledError:  # closed, or the application is gone
            reason = self._broken_reason
            _fail(session.future, PoolBroken(reason) if reason and not self._closed
                  else EnhancerClosed("the enhancer was closed"))
        except BaseException as exc:  # every failure fails this session only
            error = library_error(exc, self.app_name)
            if not session.future.done():
                log.warning("%s: %s", session.session_id, error)
            _fail(session.future, error)
        else:
            self.frames_processed += count
            self.segments_by_node[node_id] += 1
            if not session.future.done():
                try:
                    channel.store(first, count, result)
                except Exception as exc:  # fails this job only
                    _fail(session.future, ModelError(
                        f"a replica of {self.app_name} returned an unusable result: "
                        f"{type(exc).__name__}: {exc}"))
                else:
                    session.frames_done += count
                    self._report(session, count)
                    if session.frames_done == session.job.num_frames:
                        with contextlib.suppress(InvalidStateError):
                            session.future.set_result(session.job)
        finally:
            self._in_flight -= 1
            if not self._closed:
                self._pump()

    @staticmethod
    def _report(session: _Session, count: int) -> None:
        if session.progress is None:
            return
        try:
            session.progress(count)
        except Exception:  # a caller's callback must not stop the dispatcher
            log.exception("progress callback of %s failed", session.session_id)

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
                       if _plain(r.get("state")) == "RUNNING"}
            self.state = DeploymentState(
                app_status=_plain(app.get("status", "")),
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
                _fail(session.future, error)
            waiting.clear()

    def _delete_application(self) -> None:
        """Delete the application if this process deployed it (its replicas free their CPUs)."""
        ray, serve = _import_ray()
        if not self.options.deploy or not ray.is_initialized():
            return
        try:
            serve.delete(self.app_name)
        except Exception as exc:  # closing must not fail; the app can be deleted by hand
            log.warning("could not delete the Ray Serve application %s: %s",
                        self.app_name, exc)


def _plain(value: Any) -> str:
    """An enum's value (Serve's details hold ``ApplicationStatus.RUNNING``), else ``str``."""
    return str(getattr(value, "value", value))


def _fail(future: Future, error: BaseException) -> None:
    """Fail ``future`` unless it is already done (finished, failed or cancelled)."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)

"""The Ray Serve side of the ``ray`` backend: replicas, applications, errors, the cluster.

Two ways to own the Serve applications (``RayOptions.deploy``):

- ``deploy=True`` (``RAY_DEPLOY=true``, the default): the API process deploys one application
  per model, ``enhancer-<model name>``, with the ``RAY_*`` settings, and deletes it on close.
- ``deploy=False``: the applications come from ``deploy/serve_config.yaml`` (``serve deploy``,
  or KubeRay's ``RayService``); the backend attaches to them by name and waits for them.
  :func:`model_app` is that file's import path for the models (the API's is
  :func:`service.ray_ingress.api_app`).

Errors map to the library's (:func:`library_error`): a replica that died holding a segment
(``ActorDiedError``/``RayActorError``, or a ``RayTaskError`` caused by one) fails that
segment's request with :class:`WorkerCrashed` (503; Serve replaces the replica by itself);
Serve's backpressure (``BackPressureError``, beyond ``max_queued_requests``) is
:class:`Overloaded` (503 with ``Retry-After``); the model failing inside a replica is
:class:`ModelError`; an application that failed to deploy or was deleted is
:class:`PoolBroken`.

``ray`` is imported only here and in :mod:`enhancer.backends.ray.backend`, and only when that
backend starts, so the default install and ``make run`` never need it (``pip install -r
requirements-ray.txt``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from enhancer.errors import (
    EnhancerError,
    ModelError,
    Overloaded,
    PoolBroken,
    WorkerCrashed,
)
from enhancer.model.framing import Framing
from enhancer.model.grid import result_length, run_segment, run_stream_step

if TYPE_CHECKING:
    from enhancer.config import EngineSettings

log = logging.getLogger("enhancer.ray")
Runner = TypeVar("Runner")

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
    def from_settings(cls, settings: EngineSettings) -> RayOptions:
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


def _from_bytes(model: bytes, load: Callable[[str], Runner]) -> Runner:
    """``load`` a runner from a model's bytes. The runners read a file; the interpreter maps
    it, so the file can go at once."""
    with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
        file.write(model)
        file.flush()
        return load(file.name)


class ModelReplica:
    """A Serve replica's state: one LiteRT interpreter, loaded from the model's bytes, and
    one for its stream step twin if it has one (streams' chunks with their state: ``run_step``).

    Serve runs a replica's synchronous methods on a thread pool, and an interpreter is not
    thread-safe, so segments take turns on a lock (``max_ongoing_requests`` > 1 only overlaps
    a segment's transfer with the previous one's run).
    """

    def __init__(self, model: bytes, frame_length: int, hop_length: int, window: str,
                 num_threads: int = 1, context: int = 0, stream_step: bytes | None = None,
                 state_size: int = 0) -> None:
        import ray

        from enhancer.model.loading import load_model_runner, load_runners, load_step_runner

        self._framing = Framing(frame_length, hop_length, window, context)
        if stream_step == model:  # a chained model's graph is its own stream step: one load
            self._runner, self._step = _from_bytes(model, lambda path: load_runners(
                path, path, frame_length, state_size, num_threads))
        else:
            self._runner = _from_bytes(model, lambda path: load_model_runner(path, num_threads))
            self._step = None if stream_step is None else _from_bytes(
                stream_step, lambda path: load_step_runner(path, frame_length, state_size,
                                                           num_threads))
        self._lock = threading.Lock()
        self._node_id = ray.get_runtime_context().get_node_id()

    def run(self, samples: np.ndarray, count: int) -> tuple[np.ndarray, str, int]:
        """A segment of ``count`` frames, given as its samples, in; its result out
        (:func:`enhancer.model.grid.run_segment`), with the node and process it ran in."""
        result = np.empty(result_length(self._framing, count), np.float32)
        with self._lock:
            run_segment(self._runner.run, self._framing, samples, count, result)
        return result, self._node_id, os.getpid()

    def run_step(self, samples: np.ndarray, count: int, context: int, state: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, str, int]:
        """A stream chunk of ``count`` frames (``context`` of look-back in front: a stream's
        first chunk) through the model's stream step twin from the stream's ``state``: its
        result and the state after it (:func:`enhancer.model.grid.run_stream_step`)."""
        if self._step is None:
            raise ModelError("a stream step chunk, but this deployment has no stream step model")
        framing = self._framing.with_context(context)
        result = np.empty(result_length(framing, count), np.float32)
        after = np.empty(self._step.state_size, np.float32)
        with self._lock:
            run_stream_step(self._step.run, framing, samples, count, result, state, after)
        return result, after, self._node_id, os.getpid()


def _bound_replica(deployment_options: dict[str, Any], model: bytes, framing: Framing,
                   num_threads: int, stream_step: bytes | None, state_size: int) -> Any:
    """``ModelReplica`` deployed with ``deployment_options``, bound to its arguments: the one
    place that lists them, for the API's deployment and the config file's alike."""
    from ray import serve

    deployment = serve.deployment(name=DEPLOYMENT_NAME, **deployment_options)
    return deployment(ModelReplica).bind(model, framing.frame_length, framing.hop_length,
                                         framing.window, num_threads, framing.context,
                                         stream_step, state_size)


def model_application(model: bytes, framing: Framing, options: RayOptions,
                      stream_step: bytes | None = None, state_size: int = 0) -> Any:
    """The Serve application of one model (and its stream step twin, if any):
    ``ModelReplica`` with ``options``' settings."""
    return _bound_replica(options.deployment_options(), model, framing, options.num_threads,
                          stream_step, state_size)


def model_app(args: dict[str, Any]) -> Any:
    """``serve build``/config import path: ``enhancer.backends.ray.backend:model_app``.

    ``args``: ``model_path`` (relative: from the project folder, or the installed package's
    models by file name; the card beside it gives the framing), and optionally
    ``num_threads`` and ``sample_rate`` (for a model without a card). Replicas, CPUs and
    queue limits come from the config's ``deployments`` section, which overrides the
    defaults here.
    """
    from enhancer.model.card import framing_for, load_card
    from enhancer.model.loading import load_model_runner
    from enhancer.paths import PROJECT_DIR, SHIPPED_MODELS_DIR

    path = Path(args["model_path"])
    if not path.is_absolute():  # from the project folder, else the installed package's models
        path = (PROJECT_DIR / path if (PROJECT_DIR / path).is_file()
                else SHIPPED_MODELS_DIR / path.name)
    card = load_card(path, int(args.get("sample_rate", 48000)))
    framing = framing_for(card, load_model_runner(path).frame_length)
    options = RayOptions().deployment_options()
    del options["num_replicas"]  # the config's own num_replicas or autoscaling_config decides
    step = card.stream_step_path.read_bytes() if card.stream_step_path is not None else None
    return _bound_replica(options, path.read_bytes(), framing, int(args.get("num_threads", 1)),
                          step, card.stream_state_size)


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


def import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return ray, serve


def connect(address: str) -> None:
    """Join the Ray cluster (or start one) unless this process already has; count users."""
    ray, _ = import_ray()
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


def disconnect() -> None:
    """Leave the cluster when the last backend that joined it closes (if it joined it)."""
    ray, _ = import_ray()
    with _connection_lock:
        _connection["users"] -= 1
        if _connection["users"] == 0 and _connection["owned"]:
            _connection["owned"] = False
            ray.shutdown()


# ----------------------------------------------------------------------------------- applications


def start_application(model_path: Path, app_name: str, framing: Framing,
                      options: RayOptions, step_model_path: Path | None = None,
                      state_size: int = 0) -> Any:
    """A handle on the model's application: deployed now, or (``deploy=False``) the one the
    Serve config deployed."""
    _, serve = import_ray()
    if not options.deploy:
        return serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=app_name,
                                           _check_exists=False)
    from ray.serve import RunTarget

    # Serve with no HTTP proxies, unless it already runs: this process calls by handle.
    serve.start(proxy_location="Disabled")
    app = model_application(model_path.read_bytes(), framing, options,
                            None if step_model_path is None else step_model_path.read_bytes(),
                            state_size)
    (handle,) = serve.run_many([RunTarget(target=app, name=app_name, route_prefix=None)],
                               wait_for_applications_running=False)
    return handle


def delete_application(app_name: str, options: RayOptions) -> None:
    """Delete the application if this process deployed it (its replicas free their CPUs)."""
    ray, serve = import_ray()
    if not options.deploy or not ray.is_initialized():
        return
    try:
        serve.delete(app_name)
    except Exception as exc:  # closing must not fail; the app can be deleted by hand
        log.warning("could not delete the Ray Serve application %s: %s", app_name, exc)


def cluster_cpus() -> str:
    """The cluster's CPUs, all and free, in words for an error message."""
    ray, _ = import_ray()
    try:
        return (f"the cluster has {ray.cluster_resources().get('CPU', 0):g} CPUs, "
                f"{ray.available_resources().get('CPU', 0):g} free")
    except Exception as exc:  # only words for an error message
        return f"cluster resources unknown ({exc})"

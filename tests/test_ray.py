"""The Ray Serve backend on a two-node local Ray cluster (head and one worker, one CPU each).

Through the HTTP API: the ×3 passthrough comes back bit for bit, and blocks were run by
replicas on both nodes; a replica killed during a stream of requests fails only the requests
whose blocks it held (503, no hang) and the deployment is back to full strength by itself;
the worker node removed, the head's replica serves on. Also: the config files against Ray's
own schema (and deployed: the API as a Serve ingress), the error mapping, the settings; a
denoiser (a chain: its own stream step) streams on the replicas and equals the file path.

Ray is an optional extra (requirements-ray.txt, installed by ``make test``): without it these
tests skip, except under CI, where a missing Ray is a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.helpers import (
    DENOISER,
    PASSTHROUGH,
    ROOT,
    children_of,
    free_port,
    random_audio,
    raw,
    same_bits,
    wait_until_gone,
)

try:
    with warnings.catch_warnings():  # Ray's own pydantic deprecations, at import
        warnings.simplefilter("ignore", DeprecationWarning)
        import ray
        from ray import serve
        from ray.cluster_utils import Cluster
        from ray.serve import schema as _  # noqa: F401 (imported here for the warnings)
except ImportError as exc:
    if os.environ.get("CI"):
        raise
    pytest.skip(f"Ray Serve is not installed ({exc}): pip install -r requirements-ray.txt "
                f"(make test does)", allow_module_level=True)

from fastapi.testclient import TestClient

from enhancer.backends.ray.backend import (
    DEPLOYMENT_NAME,
    RayServeBackend,
    library_error,
    replica_segment_frames,
)
from enhancer.backends.ray.deployment import APP_PREFIX
from enhancer.errors import ModelError, Overloaded, PoolBroken, WorkerCrashed
from service.app import create_app
from service.settings import Settings

DEPLOY = ROOT / "deploy"
HEAVY = ROOT / "bench" / "heavy_model.tflite"  # built by make bench, else here
RATE = 48000  # the passthrough's own rate: no resampling, so the answer is exact


def post(client, audio: np.ndarray, **fields: str):
    return client.post("/enhance", files={"file": ("a.raw", raw(audio))},
                       data={"sample_rate": str(RATE), **fields})


def dfn3_reference(audio: np.ndarray) -> np.ndarray:
    """DeepFilterNet3 in this process, one interpreter, the delay removed."""
    from enhancer.model.dfn3 import Dfn3, Dfn3StepModel

    return Dfn3(Dfn3StepModel(ROOT / "models" / "deepfilternet3_step.tflite")).enhance(audio)


def assert_tripled(response, audio: np.ndarray) -> None:
    assert response.status_code == 200, response.text
    assert same_bits(np.frombuffer(response.content, "<f4"), audio * np.float32(3))


# ----------------------------------------------------------------------------- no cluster


def test_serve_config_passes_rays_schema_and_rayservice_embeds_it():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    names = [app.name for app in schema.applications]
    # One application per shipped model, named as the backend looks them up, and the API.
    assert names == [f"{APP_PREFIX}denoiser_48k", f"{APP_PREFIX}deepfilternet3",
                     f"{APP_PREFIX}passthrough_model_lite", "api"]
    for app in schema.applications[:3]:
        assert app.import_path == "enhancer.backends.ray.deployment:model_app"
        assert (ROOT / app.args["model_path"]).is_file()
        assert [d.name for d in app.deployments] == [DEPLOYMENT_NAME]
    assert schema.applications[-1].runtime_env["env_vars"]["RAY_DEPLOY"] == "false"

    manifest = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == config
    pinned = (ROOT / "requirements-ray.txt").read_text().split("ray[serve]==")[1].split()[0]
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == pinned == ray.__version__


def test_ray_errors_map_to_the_library_errors():
    from ray import exceptions as rx
    from ray.serve import exceptions as sx

    died = rx.ActorDiedError()
    assert isinstance(library_error(died, "app"), WorkerCrashed)
    assert "replica of app died" in str(library_error(died, "app"))
    assert isinstance(library_error(rx.RayTaskError("run", "tb", died), "app"), WorkerCrashed)
    assert isinstance(library_error(sx.BackPressureError(num_queued_requests=5,
                                                         max_queued_requests=4), "app"),
                      Overloaded)
    failed = library_error(rx.RayTaskError("run", "tb", ValueError("bad shape")), "app")
    assert isinstance(failed, ModelError) and "bad shape" in str(failed)
    assert isinstance(library_error(sx.DeploymentUnavailableError(None), "app"), PoolBroken)


def test_segments_are_large_and_even_over_the_replicas():
    assert replica_segment_frames(1210, 2, 256) == 303  # 4 segments, 2 a replica, not 5 of 256
    assert replica_segment_frames(100_000, 2, 256) >= 256
    assert replica_segment_frames(470, 2, 256) == 235  # too short for 256 a replica: spread it
    assert replica_segment_frames(94, 2, 256) == 64  # never under 64 frames a call...
    assert replica_segment_frames(10, 2, 256) == 10  # ...unless the job is shorter


def test_settings_choose_and_check_the_ray_backend():
    assert Settings(_env_file=None).BACKEND == "local"
    assert Settings(_env_file=None).ray_options is None
    options = Settings(_env_file=None, BACKEND="ray", RAY_REPLICAS=3, RAY_MIN_REPLICAS=1,
                       RAY_MAX_REPLICAS=4, RAY_MAX_QUEUED_REQUESTS=10).ray_options
    assert options is not None and options.autoscaling
    deployment = options.deployment_options()
    assert deployment["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4,
                                                "initial_replicas": 3}
    assert deployment["max_queued_requests"] == 10 and "num_replicas" not in deployment
    with pytest.raises(ValueError, match="RAY_MIN_REPLICAS"):
        Settings(_env_file=None, RAY_MIN_REPLICAS=5, RAY_MAX_REPLICAS=2)
    with pytest.raises(ValueError, match="BACKEND"):
        Settings(_env_file=None, BACKEND="kubernetes")


# ----------------------------------------------------------------------------- the cluster


def _ray_processes(cluster: Cluster) -> list[int]:
    """Every process of the cluster: its daemons and the workers (replicas) raylets started."""
    pids = []
    for node in [cluster.head_node, *cluster.worker_nodes]:
        for infos in node.all_processes.values():
            pids += [info.process.pid for info in infos]
    for raylet in [p for n in [cluster.head_node, *cluster.worker_nodes]
                   for p in n.all_processes.get("raylet", [])]:
        pids += children_of(raylet.process.pid)
    return pids


# Serve's own checks of its HTTP proxy, lengthened from 5 and 10 s: on a busy two-core machine
# a healthy proxy can take longer to answer, and Serve then kills it mid-test.
PATIENT_SERVE = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
                 "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


@pytest.fixture(scope="module")
def cluster():
    # Workers import the project (the config's import paths) like `pip install .` would let them.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved]))
    patience = {name: os.environ.get(name) for name in PATIENT_SERVE}
    os.environ.update(PATIENT_SERVE)
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level=logging.WARNING,
                 namespace="audio-enhancer")
        cluster.wait_for_nodes()
        yield cluster
    finally:
        seen = _ray_processes(cluster)
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        for name, value in [("PYTHONPATH", saved), *patience.items()]:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        assert wait_until_gone(seen, timeout=20), "Ray processes outlived the cluster"


def test_serve_config_deploys_and_the_api_serves_through_serves_proxy(cluster):
    """deploy/serve_config.yaml as a cluster runs it: models by handle, the API as ingress."""
    from ray.serve._private.api import serve_start
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    for app in config["applications"]:  # this cluster has 2 CPUs; let everything fit
        for deployment in app["deployments"]:
            deployment["ray_actor_options"] = {"num_cpus": 0}
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = 1
    schema = ServeDeploySchema.model_validate(config)
    serve_start(http_options=schema.http_options.model_dump(),
                proxy_location=schema.proxy_location)
    _get_global_client().deploy_apps(schema)
    try:
        # Four applications' replicas start one after another on two CPUs: about 30 s on a
        # quiet machine, several times that beside a CPU hog.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = serve.status().applications
            if len(status) == 4 and all(a.status == "RUNNING" for a in status.values()):
                break
            assert not any(a.status == "DEPLOY_FAILED" for a in status.values()), status
            time.sleep(0.5)
        else:
            pytest.fail(f"the config's applications did not start: {serve.status()}")
        audio = random_audio(RATE * 3, seed=1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            assert client.get("/ready").json()["workers"] == 3
            assert_tripled(post(client, audio, model="passthrough_model_lite"), audio)
            assert client.post("/enhance", files={"file": ("a.raw", raw(audio))},
                               data={"sample_rate": str(RATE)}).status_code == 200
            # DeepFilterNet3's chain of steps through the replicas: the local result exactly.
            response = post(client, audio, model="deepfilternet3")
            assert response.status_code == 200, response.text
            assert same_bits(np.frombuffer(response.content, "<f4"), dfn3_reference(audio))
    finally:
        for name in [app["name"] for app in config["applications"]]:
            serve.delete(name)


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory) -> Path:
    """A folder with the benchmarks' heavy model (about 1 ms a frame) and its card, so a
    replica is killed while it runs a segment, not between two."""
    folder = tmp_path_factory.mktemp("models")
    heavy = folder / "heavy.tflite"
    if HEAVY.is_file():
        shutil.copyfile(HEAVY, heavy)
    else:  # in a child process: TensorFlow stays out of this one
        subprocess.run([sys.executable, "-m", "bench.heavy_model", str(heavy)], cwd=ROOT,
                       check=True, capture_output=True, timeout=300)
    (folder / "heavy.json").write_text(json.dumps({
        "name": "heavy", "sample_rate": RATE, "frame_length": 1024, "hop_length": 1024,
        "window": "none", "description": "benchmark load, not an enhancer"}))
    # The denoiser: a chain, its pieces and stream chunks carry its state to the replicas.
    for path in DENOISER.parent.glob(f"{DENOISER.stem}*"):
        if path.suffix in (".tflite", ".json"):
            shutil.copyfile(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def client(cluster, slow_models):
    """The service on BACKEND=ray: the passthrough, the heavy model and the denoiser, two
    replicas each, 0.3 CPU per replica, so each node runs one of each."""
    settings = Settings(_env_file=None, BACKEND="ray", RAY_ADDRESS=cluster.address,
                        RAY_REPLICAS=2, RAY_CPUS_PER_REPLICA=0.3, TF_MODEL_PATH=PASSTHROUGH,
                        MODELS_DIR=slow_models)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def worker_node(cluster: Cluster):
    (node,) = cluster.worker_nodes
    return node


def backend_of(client, model: str | None = None) -> RayServeBackend:
    backend = client.app.state.models.get(model).backend
    backend = getattr(backend, "inner", backend)  # a chained model's pieces go to Ray too
    assert isinstance(backend, RayServeBackend)
    return backend


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_exact_through_the_api_with_replicas_on_both_nodes(client, cluster):
    backend = backend_of(client)
    nodes = {cluster.head_node.node_id, worker_node(cluster).node_id}
    assert set(backend.replica_nodes.values()) == nodes
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["workers"] == 6  # three models, two each

    # Several requests at once, each several blocks long, so both replicas get work.
    clips = [random_audio(RATE * 6 + seed * 777, seed) for seed in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda audio: post(client, audio), clips))
    for response, audio in zip(responses, clips, strict=True):
        assert_tripled(response, audio)
    assert set(backend.segments_by_node) == nodes, backend.segments_by_node
    assert backend.frames_processed >= sum(len(c) for c in clips) // 1024


def test_a_stream_runs_on_the_ray_backend_at_live_priority(client):
    """Stream chunks are jobs like any other: their state stays in the API process."""
    enhancer = client.app.state.models.get(None)
    audio = random_audio(RATE * 2 + 123, seed=7)
    cuts = [0, 1, 480, 5_000, 5_001, 40_000, 90_000, audio.shape[0]]

    async def stream() -> np.ndarray:
        live = enhancer.open_stream(RATE)
        parts = [await live.push(audio[a:b]) for a, b in itertools.pairwise(cuts)]
        return np.concatenate([*parts, await live.finish()])[:, 0]

    before = backend_of(client).frames_processed
    assert same_bits(asyncio.run(stream()), audio * np.float32(3))
    assert backend_of(client).frames_processed > before


def test_a_denoiser_stream_on_ray_carries_its_state_and_equals_the_file_path(client):
    """The stream step on the replicas: chunks after the first carry the model's state,
    not their look-back, and the stream is the file path's output bit for bit."""
    model = "denoiser_48k"
    enhancer = client.app.state.models.get(model)
    assert backend_of(client, model).runs_stream_steps
    audio = random_audio(RATE * 2 + 123, seed=8)
    cuts = [0, 1, 480, 5_000, 5_001, 40_000, 90_000, audio.shape[0]]

    async def stream() -> np.ndarray:
        live = enhancer.open_stream(RATE)
        assert live.stepped
        parts = [await live.push(audio[a:b]) for a, b in itertools.pairwise(cuts)]
        return np.concatenate([*parts, await live.finish()])[:, 0]

    response = post(client, audio, model=model)
    assert response.status_code == 200, response.text
    assert same_bits(asyncio.run(stream()), np.frombuffer(response.content, "<f4"))


def test_a_step_chunk_is_refused_by_a_deployment_without_a_stream_step(client):
    from enhancer.model.grid import ChannelJob, Job

    backend = backend_of(client)  # the passthrough: no stream step twin
    assert not backend.runs_stream_steps
    framing = client.app.state.models.get(None).framing
    chunk = ChannelJob(framing, np.zeros(4096, np.float32), 4, offset=0,
                       state=np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="a stream step chunk needs a model with a stream step"):
        backend.run(Job([chunk]), "no-step").result(timeout=10)


def _kill_a_replica_under_load(client, backend) -> tuple[list, list]:
    """Kill one replica of ``backend`` while the dispatcher's window is full: the clips sent
    and every request's answer."""
    victim = backend.worker_pids[0]
    clips = [random_audio(RATE * 2, seed) for seed in range(12)]  # one ~0.1 s segment each
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(post, client, audio, model="heavy") for audio in clips]
        # Each replica runs one segment and holds the next (max_ongoing_requests = 2).
        wait_for(lambda: backend.in_flight >= backend.state.window, 30, "a full window")
        os.kill(victim, signal.SIGKILL)
        # No request hangs: every one gets an answer.
        responses = [f.result(timeout=60) for f in futures]
    # Serve replaces the replica, without a restart of the service.
    wait_for(lambda: backend.is_ready and victim not in backend.worker_pids, 120,
             "a replacement replica")
    return clips, responses


def test_killed_replica_fails_only_its_segments_and_the_deployment_recovers(client):
    backend = backend_of(client, "heavy")
    # A full window is counted in this process: on a loaded machine Serve's router may still
    # hold every segment (its replica probes time out), and a replica killed then fails
    # nothing. Another kill, of the replacement, is then tried; one of three must hit work.
    kills = 0
    while kills < 3:
        clips, responses = _kill_a_replica_under_load(client, backend)
        kills += 1
        crashed = [r for r in responses if r.status_code != 200]
        if crashed:
            break
    # Only the segments the replica had accepted fail (Serve sends the ones it had not
    # accepted yet to the other replica); every other request is served in full.
    assert 1 <= len(crashed) <= 2, [r.status_code for r in responses]
    for response in crashed:
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert "replica of enhancer-heavy died" in detail and "ActorDiedError" in detail
        assert response.headers["retry-after"] == "1"
    for response, audio in zip(responses, clips, strict=True):
        if response.status_code == 200:
            result = np.frombuffer(response.content, "<f4")
            assert result.shape == audio.shape and np.isfinite(result).all()

    assert client.get("/ready").json()["workers"] == 6
    metrics = client.get("/metrics").text
    assert f"enhance_worker_restarts {kills}.0" in metrics, metrics
    audio = random_audio(RATE, seed=99)
    assert post(client, audio, model="heavy").status_code == 200
    assert_tripled(post(client, audio), audio)


def test_removing_the_worker_node_keeps_the_heads_replica_serving(client, cluster):
    backend = backend_of(client)
    head = cluster.head_node.node_id
    cluster.remove_node(worker_node(cluster))
    # Requests in flight at that moment may fail with 503; from when Serve has seen the node
    # go, every request is served, by the head's replica alone.
    wait_for(lambda: set(backend.replica_nodes.values()) == {head}, 60,
             "Serve to see the worker node go")
    before = backend.segments_by_node.copy()
    clips = [random_audio(RATE * 3, seed) for seed in range(6)]
    for audio in clips:
        assert_tripled(post(client, audio), audio)
    served = backend.segments_by_node - before
    assert set(served) == {head}, served
    # Not at full strength (one CPU left for two replicas): /ready says so, /enhance serves.
    assert client.get("/ready").status_code == 503

"""Jobs (``/jobs``): a long recording through a real server with flat memory and a resumed
download; restarts after SIGKILL; two front ends on one store; keys; webhooks; bad input.

Every test that runs a server or a store runs twice: on SQLite (the default) and on a real
PostgreSQL server (``JOBS_DATABASE_URL``, the ``postgres_url`` fixture), the same code path.
Servers serve the ×3 passthrough (exact: the result is 3 × the input, as
``AudioEnhancer.enhance`` gives). The long-recording test uses 5 minutes of 48 kHz audio
here; ``JOBS_TEST_MINUTES=120`` (``make bench-jobs``) runs it on the issue's two hours.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import update

from enhancer import AudioEnhancer
from enhancer.backends.base import Priority
from enhancer.jobs.runner import JobRunner, RunnerOptions, job_stream
from enhancer.jobs.store import FAILED, SUCCEEDED, JobRecord, JobStore, NewJob, new_job_id
from tests.audio_builders import float_wav
from tests.helpers import DENOISER, PASSTHROUGH, LiveServer, random_audio
from tests.test_jobs_support import PeakMemory, Receiver, fresh_database, wait_for_job

RATE = 48_000
MINUTES = float(os.environ.get("JOBS_TEST_MINUTES", "5"))
BLOCK_S = 60  # the long test's audio is written and checked a minute at a time
ALICE, BOB = {"X-API-Key": "key-of-alice"}, {"X-API-Key": "key-of-bob"}


# The PostgreSQL server the module's current run uses (None: SQLite), and the database each
# jobs folder got on it, so a restarted server finds its jobs again.
_postgres: dict[str, str | None] = {"url": None}
_databases: dict[Path, str] = {}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request) -> Iterator[str]:
    """Each database in turn, for every test that uses it (through ``_server``, ``keyed`` or
    ``store_url``)."""
    if request.param == "postgresql":
        _postgres["url"] = request.getfixturevalue("postgres_url")
    yield request.param
    _postgres["url"] = None


@pytest.fixture
def store_url(database, tmp_path) -> str | None:
    """A store of this test's own: None for SQLite under its folder, else a new database."""
    return None if _postgres["url"] is None else fresh_database(_postgres["url"])


def _server(jobs: Path, **env: str) -> LiveServer:
    """A server with one model (a quick start) and one worker, on the current database."""
    empty = jobs.parent / "no-more-models"
    empty.mkdir(exist_ok=True)
    if _postgres["url"] is not None:
        if jobs not in _databases:
            _databases[jobs] = fresh_database(_postgres["url"])
        env = {"JOBS_DATABASE_URL": _databases[jobs], **env}
    return LiveServer(JOBS_DIR=str(jobs), NUM_PROCESSES="1", MODELS_DIR=str(empty), **env)


@pytest.fixture(scope="module")
def keyed(database, tmp_path_factory) -> LiveServer:
    """One server for the tests that need no restart: two keys, 3 MB of disk for jobs."""
    folder = tmp_path_factory.mktemp("keyed")
    with _server(folder / "jobs", API_KEYS="alice:key-of-alice,bob:key-of-bob",
                 JOBS_MAX_DISK_MB="3") as server:
        yield server


def _block(index: int, frames: int) -> np.ndarray:
    """Minute ``index`` of the long test's audio, made again whenever needed."""
    return random_audio(frames, seed=1000 + index).astype(np.float32)


def _write_long_wav(path: Path, seconds: float) -> int:
    frames = int(seconds * RATE)
    with sf.SoundFile(path, "w", RATE, 1, "FLOAT", format="WAV") as f:
        for index, start in enumerate(range(0, frames, BLOCK_S * RATE)):
            f.write(_block(index, min(BLOCK_S * RATE, frames - start)))
    return frames


def _check_long_result(path: Path, frames: int) -> None:
    with sf.SoundFile(path) as f:
        assert (f.samplerate, f.channels, f.frames, f.subtype) == (RATE, 1, frames, "FLOAT")
        for index, start in enumerate(range(0, frames, BLOCK_S * RATE)):
            expected = 3 * _block(index, min(BLOCK_S * RATE, frames - start))
            got = f.read(len(expected), dtype="float32")
            assert np.array_equal(got, expected), f"minute {index} differs"


def _download_in_two(url: str, path: Path) -> None:
    """The result in two requests: a download cut halfway, then resumed with Range."""
    with path.open("wb") as out:
        with httpx.stream("GET", url, timeout=60) as first:
            assert first.status_code == 200 and first.headers["accept-ranges"] == "bytes"
            size = int(first.headers["content-length"])
            half = size // 2
            for piece in first.iter_bytes(1 << 20):
                out.write(piece[:half - out.tell()])
                if out.tell() >= half:
                    break  # the connection drops here
        assert out.tell() == half
        with httpx.stream("GET", url, headers={"Range": f"bytes={half}-"}, timeout=60) as rest:
            assert rest.status_code == 206
            assert rest.headers["content-range"] == f"bytes {half}-{size - 1}/{size}"
            for piece in rest.iter_bytes(1 << 20):
                out.write(piece)
    assert path.stat().st_size == size


@pytest.mark.usefixtures("database")
def test_a_long_recording_runs_in_flat_memory_and_resumes_its_download(tmp_path):
    source = tmp_path / "long.wav"
    frames = _write_long_wav(source, MINUTES * 60)
    with _server(tmp_path / "jobs") as server:
        httpx.get(f"{server.url}/jobs", timeout=30)  # the first request's imports, before
        with PeakMemory(server.process.pid) as memory, source.open("rb") as f:
            answer = httpx.post(f"{server.url}/jobs", content=f, timeout=600,
                                headers={"Content-Type": "audio/wav"})
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["id"]
            assert answer.headers["location"] == f"/jobs/{job_id}"
            job, progress = wait_for_job(server.url, job_id, timeout=600 + MINUTES * 10)
        assert job["status"] == "succeeded", job
        assert job["audio_seconds"] == pytest.approx(MINUTES * 60)
        assert progress == sorted(progress) and progress[-1] == 1.0
        print(f"{MINUTES:g} min: the server grew by {memory.rise_mb:.0f} MB "
              f"(from {memory.start:.0f} MB)")  # shown with -s (make bench-jobs)
        assert memory.rise_mb < 100, f"the server grew by {memory.rise_mb:.0f} MB"
        result = tmp_path / "result.wav"
        _download_in_two(f"{server.url}{job['result_url']}", result)
    _check_long_result(result, frames)


def _raw(samples: np.ndarray) -> bytes:
    return samples.astype("<f4").tobytes()


def _post_raw(url: str, samples: np.ndarray, headers: dict[str, str] | None = None,
              query: str = "sample_rate=48000") -> httpx.Response:
    return httpx.post(f"{url}/jobs?{query}", content=_raw(samples), timeout=60,
                      headers={"Content-Type": "application/octet-stream", **(headers or {})})


@pytest.mark.usefixtures("database")
def test_a_job_killed_while_running_succeeds_after_a_restart(tmp_path):
    audio = random_audio(45 * RATE, seed=7).astype(np.float32)  # two blocks
    jobs = tmp_path / "jobs"
    server = _server(jobs, TF_MODEL_PATH=str(DENOISER))
    try:
        job_id = _post_raw(server.url, audio).json()["id"]
        deadline = time.monotonic() + 120
        while (before := httpx.get(f"{server.url}/jobs/{job_id}",
                                   timeout=30).json()["progress"]) == 0:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.02)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    finally:
        server.stop()
    left = JobStore(jobs, _databases.get(jobs))
    assert left.get(job_id).status == "running"  # as the kill left it
    left.close()
    with _server(jobs, TF_MODEL_PATH=str(DENOISER)) as again:
        job, progress = wait_for_job(again.url, job_id, timeout=300)
        assert job["status"] == "succeeded", job
        assert progress == sorted(progress) and progress[0] >= before  # never backwards
        got = np.frombuffer(httpx.get(f"{again.url}{job['result_url']}", timeout=60).content,
                            "<f4")
    with AudioEnhancer(DENOISER, num_processes=0) as reference:
        assert np.array_equal(got, reference.enhance(audio, RATE))


@pytest.mark.usefixtures("database")
def test_a_server_killed_during_an_upload_leaves_no_job_and_the_retry_works(tmp_path):
    jobs = tmp_path / "jobs"
    audio = random_audio(RATE, seed=8).astype(np.float32)
    server = _server(jobs)
    sent = []

    def slow_body():
        yield _raw(audio[: RATE // 2])
        sent.append(True)
        time.sleep(30)  # the server is killed meanwhile
        yield _raw(audio[RATE // 2:])

    try:
        def upload() -> None:
            with contextlib.suppress(httpx.TransportError):
                httpx.post(f"{server.url}/jobs?sample_rate=48000", content=slow_body(),
                           headers={"Content-Type": "application/octet-stream",
                                    "Idempotency-Key": "upload-1"}, timeout=60)

        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    finally:
        server.stop()
    with _server(jobs) as again:
        assert httpx.get(f"{again.url}/jobs", timeout=30).json()["jobs"] == []
        first = _post_raw(again.url, audio, {"Idempotency-Key": "upload-1"})
        second = _post_raw(again.url, audio, {"Idempotency-Key": "upload-1"})
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        job, _ = wait_for_job(again.url, first.json()["id"])
        got = httpx.get(f"{again.url}{job['result_url']}", timeout=30).content
        assert np.array_equal(np.frombuffer(got, "<f4"), 3 * audio)
        assert len(httpx.get(f"{again.url}/jobs", timeout=30).json()["jobs"]) == 1


@pytest.mark.usefixtures("database")
def test_two_front_ends_on_one_store_run_each_job_exactly_once(tmp_path):
    jobs = tmp_path / "jobs"
    count = 8
    audios = [random_audio(RATE, seed=20 + i).astype(np.float32) for i in range(count)]
    with _server(jobs) as a, _server(jobs) as b:
        ids = [_post_raw((a, b)[i % 2].url, audio).json()["id"]
               for i, audio in enumerate(audios)]
        for i, job_id in enumerate(ids):
            job, _ = wait_for_job((b, a)[i % 2].url, job_id)  # either front end sees it
            got = httpx.get(f"{a.url}{job['result_url']}", timeout=30).content
            assert np.array_equal(np.frombuffer(got, "<f4"), 3 * audios[i])
    store = JobStore(jobs, _databases.get(jobs))
    records = [store.get(job_id) for job_id in ids]
    assert [r.runs for r in records] == [1] * count  # claimed once each
    assert all(r.status == SUCCEEDED for r in records)


def test_another_key_cannot_see_a_job(keyed):
    url = keyed.url
    assert _post_raw(url, np.ones(8)).status_code == 401
    job_id = _post_raw(url, np.ones(4800), ALICE).json()["id"]
    assert len(job_id) == 32  # 128 random bits in hex
    assert wait_for_job(url, job_id, ALICE)[0]["status"] == "succeeded"
    for method, path in [("GET", ""), ("GET", "/result"), ("DELETE", "")]:
        answer = httpx.request(method, f"{url}/jobs/{job_id}{path}", headers=BOB)
        assert answer.status_code == 404, (method, path)
        assert answer.json() == {"detail": f"no job {job_id}"}
    assert httpx.get(f"{url}/jobs", headers=BOB).json()["jobs"] == []
    mine = httpx.get(f"{url}/jobs", headers=ALICE).json()["jobs"]
    assert job_id in [j["id"] for j in mine]
    assert httpx.get(f"{url}/jobs/{job_id}", headers=ALICE).status_code == 200
    assert httpx.get(f"{url}/jobs/nope", headers=ALICE).status_code == 404


def test_jobs_are_listed_newest_first_a_page_at_a_time(keyed):
    ids = [_post_raw(keyed.url, np.ones(480), BOB).json()["id"] for _ in range(3)]
    first = httpx.get(f"{keyed.url}/jobs?limit=2", headers=BOB).json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    rest = httpx.get(first["next"], headers=BOB).json()
    assert [j["id"] for j in rest["jobs"]] == ids[:1] and rest["next"] is None
    for job_id in ids:
        assert wait_for_job(keyed.url, job_id, BOB)[0]["status"] == "succeeded"
        assert httpx.delete(f"{keyed.url}/jobs/{job_id}", headers=BOB).status_code == 200
        assert httpx.get(f"{keyed.url}/jobs/{job_id}", headers=BOB).status_code == 404


def test_a_webhook_is_signed_and_retried_after_a_500(keyed):
    receiver = Receiver([500])
    audio = random_audio(4800, seed=3).astype(np.float32)
    try:
        answer = httpx.post(f"{keyed.url}/jobs", headers=ALICE, timeout=30,
                            files={"file": ("talk.wav", float_wav(audio, RATE))},
                            data={"callback_url": receiver.url})
        assert answer.status_code == 202, answer.text
        posts = receiver.wait_for(2, timeout=30)
        time.sleep(2.5)  # no third: the second was answered 200
        assert len(receiver.posts) == 2
    finally:
        receiver.close()
    for headers, body in posts:
        signature = "sha256=" + hmac.new(b"key-of-alice", body, hashlib.sha256).hexdigest()
        assert headers["X-Enhancer-Signature"] == signature
        sent = json.loads(body)
        assert (sent["id"], sent["status"]) == (answer.json()["id"], "succeeded")
        assert sent["filename"] == "talk.wav"
    assert posts[0][1] == posts[1][1]
    result = httpx.get(f"{keyed.url}{sent['result_url']}", headers=ALICE, timeout=30)
    assert 'filename="enhanced_talk.wav"' in result.headers["content-disposition"]
    assert np.array_equal(sf.read(io.BytesIO(result.content), dtype="float32")[0], 3 * audio)


def test_corrupt_audio_fails_with_the_reason(keyed):
    nan = np.ones(RATE, np.float32)
    nan[RATE // 2] = np.nan
    refused = httpx.post(f"{keyed.url}/jobs", content=b"RIFF\x10\x00\x00\x00WAVEnope",
                         headers={"Content-Type": "audio/wav", **ALICE}, timeout=30)
    assert refused.status_code in (415, 422), refused.text
    assert refused.json()["detail"]
    no_url = _post_raw(keyed.url, nan, ALICE, query="sample_rate=48000&callback_url=null")
    assert no_url.status_code == 422
    assert no_url.json()["detail"].startswith("callback_url: Value error, must be an absolute")
    job_id = _post_raw(keyed.url, nan, ALICE).json()["id"]
    job, _ = wait_for_job(keyed.url, job_id, ALICE)
    assert job["status"] == "failed"
    assert "NaN" in job["error"]
    assert httpx.get(f"{keyed.url}/jobs/{job_id}/result", headers=ALICE).status_code == 409
    assert httpx.delete(f"{keyed.url}/jobs/{job_id}", headers=ALICE).status_code == 200


def test_a_full_disk_budget_refuses_new_jobs_and_keeps_the_accepted_one(keyed):
    audio = random_audio(RATE * 6, seed=9).astype(np.float32)  # 1.15 MB; twice that counted
    kept = _post_raw(keyed.url, audio, ALICE)
    assert kept.status_code == 202, kept.text
    refused = _post_raw(keyed.url, audio, ALICE)
    assert refused.status_code == 507
    assert "JOBS_MAX_DISK_MB=3" in refused.json()["detail"]
    job, _ = wait_for_job(keyed.url, kept.json()["id"], ALICE)
    got = httpx.get(f"{keyed.url}{job['result_url']}", headers=ALICE, timeout=30).content
    assert np.array_equal(np.frombuffer(got, "<f4"), 3 * audio)
    assert httpx.delete(f"{keyed.url}/jobs/{job['id']}", headers=ALICE).status_code == 200
    assert _post_raw(keyed.url, audio, ALICE).status_code == 202  # room again


def test_a_job_whose_input_is_missing_fails_with_the_reason(tmp_path, store_url, inline):
    store = JobStore(tmp_path, store_url)
    job_id = new_job_id()
    store.staging(job_id)
    store.add(job_id, NewJob(owner="", audio_seconds=1.0, disk_bytes=0,
                             media_type="audio/wav", raw_format="f32le"))
    runner = JobRunner(store, lambda _: inline, RunnerOptions())
    job = store.claim(runner.name, lease_s=60)
    assert job is not None and job.id == job_id
    runner.run_one(job)
    ended = store.get(job_id)
    assert (ended.status, ended.error) == (FAILED, "the job's input file is missing")


def test_an_upload_left_by_a_killed_server_is_removed_once_old(tmp_path, store_url):
    store = JobStore(tmp_path, store_url)
    kept_id, stray_id, fresh_id = new_job_id(), new_job_id(), new_job_id()
    for job_id in (kept_id, stray_id, fresh_id):
        (store.staging(job_id) / "input.tmp").write_bytes(b"half an upload")
    store.add(kept_id, NewJob(owner="", audio_seconds=1.0, disk_bytes=0,
                              media_type="audio/wav", raw_format="f32le"))
    an_hour_ago = time.time() - 3600
    for job_id in (kept_id, stray_id):
        for path in (store.files / job_id, store.files / job_id / "input.tmp"):
            os.utime(path, (an_hour_ago, an_hour_ago))
    assert store.remove_strays(600) == 1
    assert sorted(p.name for p in store.files.iterdir()) == sorted([kept_id, fresh_id])


def test_a_runner_that_stops_queues_its_job_again_and_another_takes_it(tmp_path, store_url, inline):
    store = JobStore(tmp_path, store_url)
    job_id = new_job_id()
    store.staging(job_id)
    store.add(job_id, NewJob(owner="", audio_seconds=1.0, disk_bytes=0,
                             media_type="audio/wav", raw_format="f32le"))
    first = JobRunner(store, lambda _: inline, RunnerOptions())
    assert store.claim(first.name, lease_s=60).id == job_id
    assert store.claim("someone else", lease_s=60) is None  # held under its lease
    assert store.release(first.name) == 1
    second = store.claim("someone else", lease_s=60)
    assert (second.id, second.status, second.runs) == (job_id, "running", 2)
    assert not store.renew(job_id, first.name, 60, 0.5)  # the first may write no more


def _queued(store: JobStore) -> str:
    job_id = new_job_id()
    (store.staging(job_id) / "input").write_bytes(b"\0" * 400)
    store.add(job_id, NewJob(owner="", audio_seconds=1.0, disk_bytes=800,
                             media_type="application/octet-stream", raw_format="f32le"))
    return job_id


@pytest.mark.parametrize(("model", "stepped"), [(PASSTHROUGH, False), (DENOISER, True)])
def test_a_jobs_blocks_go_below_live_streams_whatever_the_model(model, stepped):
    # A chained model's stream (the denoiser's) once kept live priority, so a job's blocks
    # went to the live lane beside real streams (make bench-jobs: their p99 4.5x alone).
    with AudioEnhancer(model, num_processes=1) as enhancer:
        stream = job_stream(enhancer, RATE, 1, None)
        assert (stream.stepped, stream.priority) == (stepped, Priority.JOB)


def test_a_job_of_the_longest_audio_is_stored_and_counted_whole(tmp_path, store_url):
    # 12 hours of 48 kHz float32, input and result: past a 32-bit integer (a 2-hour float WAV
    # already was, and PostgreSQL's INTEGER refused it with a 500).
    disk_bytes = 2 * 12 * 3600 * RATE * 4
    store = JobStore(tmp_path, store_url)
    job_id = new_job_id()
    store.staging(job_id)
    store.add(job_id, NewJob(owner="", audio_seconds=12 * 3600.0, disk_bytes=disk_bytes,
                             media_type="audio/wav", raw_format="f32le"))
    assert store.get(job_id).disk_bytes == disk_bytes
    assert store.disk_used() == disk_bytes


def test_cancelling_a_running_job_stops_its_runner_and_deletes_its_files(tmp_path, store_url):
    store = JobStore(tmp_path, store_url)
    job_id = _queued(store)
    assert store.claim("runner-1", lease_s=60).id == job_id
    cancelled = store.cancel(job_id, owner="")
    assert cancelled.status == "cancelled" and not (store.files / job_id).exists()
    assert not store.renew(job_id, "runner-1", 60, 0.5)  # the runner stops at its next block
    assert not store.finish(job_id, "runner-1", SUCCEEDED)
    assert store.get(job_id).status == "cancelled" and store.disk_used() == 0


def test_a_full_queue_refuses_new_jobs_naming_the_limit(tmp_path, store_url):
    from fastapi import HTTPException
    from starlette.requests import Request

    from service.jobs_routes import _check_room
    from service.settings import Settings

    store = JobStore(tmp_path, store_url)
    _queued(store)
    settings = Settings(JOBS_MAX_QUEUED=1)
    request = Request({"type": "http", "headers": []})
    with pytest.raises(HTTPException) as refused:
        _check_room(store, settings, request)
    assert refused.value.status_code == 503
    assert "the limit JOBS_MAX_QUEUED" in refused.value.detail
    _check_room(store, Settings(JOBS_MAX_QUEUED=2), request)  # room for one more


def test_jobs_ended_longer_ago_than_the_retention_are_deleted_with_their_files(tmp_path, store_url):
    store = JobStore(tmp_path, store_url)
    old, recent, waiting = _queued(store), _queued(store), _queued(store)
    for job_id in (old, recent):
        assert store.claim("runner-1", lease_s=60).id == job_id
        assert store.finish(job_id, "runner-1", SUCCEEDED, disk_bytes=800)
    with store.engine.begin() as connection:  # as if it had ended two hours ago
        connection.execute(update(JobRecord).where(JobRecord.id == old).values(
            finished_at=time.time() - 7200))
    assert store.expire(retention_s=3600) == [old]
    assert store.get(old) is None and not (store.files / old).exists()
    assert store.get(recent).status == SUCCEEDED and (store.files / recent).exists()
    assert store.get(waiting).status == "queued"  # never expires before it ends

"""Jobs on PostgreSQL (``JOBS_DATABASE_URL``), the same code path as SQLite: a real server
(Debian's ``postgresql``: ``initdb``/``pg_ctl`` in a temporary folder, the ``postgres_url``
fixture of tests/conftest.py), and the atomic claim tested with two processes on both
databases. tests/test_jobs.py runs its server tests on both databases too.

Where PostgreSQL is not installed these tests skip and say so; under CI (``CI=true``, where
``.ci/run`` installs it) they fail instead.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from enhancer.jobs.store import SUCCEEDED, JobStore, NewJob, new_job_id
from tests.helpers import ROOT, LiveServer, random_audio
from tests.test_jobs_support import fresh_database, wait_for_job

RATE = 48_000


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str | None:
    """Each database in turn: None for the SQLite file under JOBS_DIR."""
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres_url"))


CLAIMER = """
import json, sys, time
from pathlib import Path
from enhancer.jobs.store import SUCCEEDED, JobStore, runner_name
store, me, claimed = JobStore(Path(sys.argv[1]), sys.argv[2] or None), runner_name(), []
print("ready", flush=True)
sys.stdin.readline()  # both start together
while (job := store.claim(me, lease_s=60)) is not None:
    claimed.append(job.id)
    store.finish(job.id, me, SUCCEEDED)
print(json.dumps(claimed), flush=True)
"""


def test_two_processes_claim_each_job_exactly_once(store_url, tmp_path):
    store = JobStore(tmp_path, store_url)
    ids = [new_job_id() for _ in range(40)]
    for job_id in ids:
        store.add(job_id, NewJob(owner="claims", audio_seconds=1.0, disk_bytes=0,
                                 media_type="audio/wav", raw_format="f32le"))
    claimers = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path),
                                  store_url or ""], cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for claimer in claimers:
        assert claimer.stdout.readline().strip() == "ready"
    for claimer in claimers:
        claimer.stdin.write("go\n")
        claimer.stdin.flush()
    claimed = [json.loads(claimer.communicate(timeout=120)[0]) for claimer in claimers]
    everything = claimed[0] + claimed[1]
    assert sorted(everything) == sorted(ids)  # every job, none twice
    records = [store.get(job_id) for job_id in ids]
    assert all(r.status == SUCCEEDED and r.runs == 1 for r in records)
    store.close()


def test_a_server_on_postgresql_runs_jobs_per_key(postgres_url, tmp_path):
    empty = tmp_path / "no-more-models"
    empty.mkdir()
    audio = random_audio(RATE * 3, seed=11).astype(np.float32)
    alice, bob = {"X-API-Key": "a-key"}, {"X-API-Key": "b-key"}
    with LiveServer(JOBS_DIR=str(tmp_path / "files"),
                    JOBS_DATABASE_URL=fresh_database(postgres_url),
                    NUM_PROCESSES="1", MODELS_DIR=str(empty),
                    API_KEYS="alice:a-key,bob:b-key") as server:
        def post() -> httpx.Response:
            return httpx.post(f"{server.url}/jobs?sample_rate=48000", timeout=60,
                              content=audio.astype("<f4").tobytes(),
                              headers={"Content-Type": "application/octet-stream",
                                       "Idempotency-Key": "once", **alice})

        first, again = post(), post()
        assert first.status_code == again.status_code == 202
        job_id = first.json()["id"]
        assert again.json()["id"] == job_id
        job, progress = wait_for_job(server.url, job_id, alice)
        assert job["status"] == "succeeded" and progress[-1] == 1.0
        got = httpx.get(f"{server.url}{job['result_url']}", headers=alice, timeout=30)
        assert np.array_equal(np.frombuffer(got.content, "<f4"), 3 * audio)
        assert httpx.get(f"{server.url}/jobs/{job_id}", headers=bob).status_code == 404
        assert httpx.get(f"{server.url}/jobs", headers=bob).json()["jobs"] == []
        metrics = httpx.get(f"{server.url}/metrics", headers=alice).text
        assert 'enhance_jobs{status="succeeded"} 1.0' in metrics

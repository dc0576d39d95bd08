"""Heartbeats: a stopped or hung idle worker is noticed before work reaches it (issue 34, 9).

An idle worker answers a heartbeat every half second; one silent for HEARTBEAT_TIMEOUT_S is
killed and replaced, and the pool (and /ready) is not ready until its replacement has loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from enhancer import AudioEnhancer
from enhancer.backends.pool.pool import WorkerPool
from enhancer.config import EngineSettings
from tests.helpers import (
    PASSTHROUGH,
    LiveServer,
    process_gone,
    random_audio,
    raw,
    same_bits,
    stopped,
    workers_of,
)


def wait_for(condition, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_every_worker_stopped_makes_ready_503_within_the_timeout_and_requests_still_served(
        tmp_path: Path):
    timeout = 2.0
    (tmp_path / "models").mkdir()
    with LiveServer(NUM_PROCESSES="2", MODELS_DIR=str(tmp_path / "models"),
                    HEARTBEAT_TIMEOUT_S=str(timeout)) as server:
        victims = workers_of(server.process.pid)
        assert len(victims) == 2
        with stopped(victims):
            stopped_at = time.monotonic()
            took = wait_for(lambda: httpx.get(f"{server.url}/ready", timeout=5).status_code
                            == 503, timeout + 5, "/ready said 503")
            assert took <= timeout + 1, f"/ready said 503 only after {took:.2f} s"
            body = httpx.get(f"{server.url}/ready", timeout=5).json()
            assert body == {"detail": "the worker pool is not ready"}
            audio = random_audio(4800, seed=1)
            response = httpx.post(f"{server.url}/enhance",
                                  files={"file": ("a.raw", raw(audio))},
                                  data={"sample_rate": "48000"}, timeout=30)
            answered = time.monotonic() - stopped_at
        assert response.status_code == 200, response.text
        assert same_bits(np.frombuffer(response.content, "<f4"), audio * np.float32(3))
        assert answered < 10, f"the request was answered {answered:.2f} s after the stop"
        assert all(process_gone(pid) for pid in victims)
        wait_for(lambda: httpx.get(f"{server.url}/ready", timeout=5).status_code == 200, 30,
                 "/ready said 200 again")
        assert "did not answer its heartbeat (timeout 2 s) and was killed" in server.stderr()


def test_idle_workers_answer_and_a_stopped_one_is_replaced_while_the_other_serves():
    timeout = 2.0
    with AudioEnhancer(PASSTHROUGH, num_processes=2, heartbeat_timeout_s=timeout) as enhancer:
        pool = enhancer.backend
        assert isinstance(pool, WorkerPool)
        healthy = enhancer.worker_pids
        time.sleep(1.5 * timeout)  # 6 heartbeats or so, each answered
        assert enhancer.worker_pids == healthy and pool.hung_workers == 0
        assert enhancer.is_ready
        victim, other = healthy
        with stopped([victim]):
            took = wait_for(lambda: not enhancer.is_ready, timeout + 5, "not ready")
            assert took <= timeout + 1
            audio = random_audio(100_000, seed=2)
            assert same_bits(enhancer.enhance_audio(audio, timeout=30), audio * np.float32(3))
        wait_for(lambda: enhancer.is_ready, 30, "ready again")
        assert process_gone(victim) and other in enhancer.worker_pids
        assert pool.hung_workers == 1 and enhancer.worker_restarts == 1


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_the_heartbeat_timeout_setting_is_positive(monkeypatch, value):
    monkeypatch.setenv("HEARTBEAT_TIMEOUT_S", value)
    with pytest.raises(ValueError, match="HEARTBEAT_TIMEOUT_S"):
        EngineSettings()

"""What the job tests share: a job waited for, its progress seen, a loopback webhook
receiver, a server's resident memory. No tests here."""

from __future__ import annotations

import glob
import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import httpx

from enhancer.jobs.store import new_job_id

ENDED = {"succeeded", "failed", "cancelled"}


def wait_for_job(url: str, job_id: str, headers: dict[str, str] | None = None,
                 timeout: float = 120.0) -> tuple[dict, list[float]]:
    """The job once it has ended, and every progress figure seen on the way."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", headers=headers, timeout=30).json()
        seen.append(job["progress"])
        if job["status"] in ENDED:
            return job, seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end within {timeout:g} s: {job}")


def resident_mb(pid: int) -> float:
    """The process's resident memory (VmRSS), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1000
    raise AssertionError(f"no VmRSS for {pid}")


class PeakMemory:
    """The highest resident memory of ``pid`` while the block runs, sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = resident_mb(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, resident_mb(self.pid))
            except (OSError, AssertionError):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def rise_mb(self) -> float:
        return self.peak - self.start


class Receiver:
    """An HTTP server on loopback that records every POST; it answers each with the next
    status of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = statuses.pop(0) if statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.arrived:
                    receiver.posts.append((dict(self.headers), body))
                    receiver.arrived.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout: float) -> list[tuple[dict[str, str], bytes]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.posts) >= count, timeout)
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ PostgreSQL


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server: each test starts with no jobs."""
    import psycopg

    name = f"jobs_{new_job_id().lower().replace('-', '_')}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name

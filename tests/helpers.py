"""What the tests share: paths, random audio, process checks, a live server, the CLI.

Imported by ``tests/`` and by ``test_api.py``; the bench has its own copy of nothing. Encoded
audio (WAV, FLAC, MP3, ...) is built in ``tests/audio_builders.py``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from enhancer.paths import DENOISER_MODEL, PASSTHROUGH_MODEL, PROJECT_DIR

ROOT = PROJECT_DIR
SAMPLES = ROOT / "audio_samples"
# What tests make for people to look at (screenshots), kept out of the tracked tree: build/
# is git-ignored. The paths under it are stable (``make docs`` copies from them).
ARTIFACTS = ROOT / "build" / "test-artifacts"
# The ×3 passthrough is the exactness reference: output is exactly 3 × input.
PASSTHROUGH = PASSTHROUGH_MODEL
DENOISER = DENOISER_MODEL


def random_audio(length: int, seed: int) -> np.ndarray:
    """Speech-level noise, finite float32."""
    return (np.random.default_rng(seed).standard_normal(length) * 0.1).astype(np.float32)


def raw(samples: np.ndarray) -> bytes:
    """Headerless f32le bytes."""
    return samples.astype("<f4").tobytes()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal in dtype, shape and every bit (so -0.0 differs from 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint32), b.view(np.uint32))


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far, s."""
    fields = _stat(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def niceness(pid: int) -> int:
    """The nice value of ``pid``."""
    fields = _stat(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return int(fields[16])


@contextlib.contextmanager
def stopped(pids: list[int]):
    """SIGSTOP ``pids``; on the way out SIGCONT whichever still run, so none is left frozen
    (a frozen worker would outlive its parent)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (exited, or a zombie waiting to be reaped)."""
    fields = _stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def wait_until_gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not all(process_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return all(process_gone(pid) for pid in pids)


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def workers_of(pid: int) -> list[int]:
    """The worker processes ``pid`` spawned (not multiprocessing's resource tracker)."""
    found = []
    for child in children_of(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the project folder."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, **kwargs)


def run_cli(*args: str, env: dict | None = None, cwd: Path = ROOT,
            script: str = "enhance_file.py") -> subprocess.CompletedProcess:
    """``python enhance_file.py ARGS`` as a user runs it: a separate process."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


def _file_limit(count: int | None) -> Callable[[], None] | None:
    """For ``preexec_fn``: run the child with at most ``count`` open files. Only then: a
    ``preexec_fn`` makes Popen fork and run Python in the child, which gRPC's fork handlers
    (Ray's, once a test has imported it) do not survive."""
    if count is None:
        return None

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``python main.py`` on a free loopback port, as ``make run`` starts it.

    Serves the ×3 passthrough by default (``TF_MODEL_PATH``), so answers are exact.
    """

    def __init__(self, command: list[str] | None = None, cwd: Path = ROOT,
                 max_open_files: int | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A folder of its own for jobs, so no server runs jobs another one left behind.
        self._jobs = tempfile.TemporaryDirectory(prefix="enhancer-jobs-")
        environment = {**os.environ, "APP_PORT": str(self.port), "NUM_PROCESSES": "2",
                       "TF_MODEL_PATH": str(PASSTHROUGH), "JOBS_DIR": self._jobs.name, **env}
        command = command or [sys.executable, str(ROOT / "main.py")]
        # A file, not a pipe: a server that logs a lot must never block on a full pipe.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(command, cwd=cwd, env=environment,
                                        stdout=subprocess.DEVNULL, stderr=self.log,
                                        preexec_fn=_file_limit(max_open_files))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        said = self.stderr()  # before stop(), which closes the log
        self.stop()
        raise RuntimeError(f"the server did not start: {said}")

    def stderr(self) -> str:
        """What the server has written to stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def post_tiny(self) -> httpx.Response:
        return httpx.post(f"{self.url}/enhance", files={"file": ("a.raw", raw(np.ones(8)))},
                          data={"sample_rate": "48000"}, timeout=30)

    def assert_serves(self) -> None:
        response = self.post_tiny()
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), np.full(8, 3))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self._jobs.cleanup()

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

"""The job clients: ``enhancer.apps.client``'s job functions and ``enhance --job`` against a
real server on loopback (the ×3 passthrough, so results are exact); a download cut halfway
by a loopback proxy resumes with ``Range``; Ctrl-C leaves the job (or cancels it) and says
its id. The page's jobs are tested in tests/test_page.py."""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from enhancer.apps.cli import build_parser
from enhancer.apps.client import (
    JobError,
    cancel_job,
    download_result,
    job_status,
    submit_job,
    wait_for_job,
)
from enhancer.apps.jobs_client import partial_path
from enhancer.jobs.store import new_job_id
from tests.audio_builders import float_wav
from tests.helpers import ROOT, LiveServer, random_audio

RATE = 48_000
KEY = "key-of-alice"
AUDIO = random_audio(10 * RATE, seed=35)  # 10 s: a 1.9 MB result, cut in the middle


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LiveServer:
    """A server with one model and one worker, its own JOBS_DIR, and a key."""
    folder = tmp_path_factory.mktemp("job-clients")
    (folder / "no-more-models").mkdir()
    with LiveServer(JOBS_DIR=str(folder / "jobs"), NUM_PROCESSES="1",
                    MODELS_DIR=str(folder / "no-more-models"),
                    API_KEYS=f"alice:{KEY},bob:key-of-bob") as live:
        yield live


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("source") / "long.wav"
    path.write_bytes(float_wav(AUDIO, RATE))
    return path


@pytest.fixture(scope="module")
def finished(server, source) -> str:
    """A job of ``source`` that has succeeded: its id."""
    job = submit_job(server.url, source, api_key=KEY)
    assert wait_for_job(server.url, job["id"], KEY, timeout_s=60)["status"] == "succeeded"
    return str(job["id"])


def _exact(path: Path) -> None:
    got, rate = sf.read(path, dtype="float32")
    assert rate == RATE and sf.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(got, 3 * AUDIO)


class Proxy:
    """A loopback HTTP proxy to ``upstream`` that records each GET's path and ``Range``;
    while ``cuts`` > 0 it sends only the first half of a result, then drops the connection."""

    def __init__(self, upstream: str, cuts: int = 0) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.cuts = cuts
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.seen.append((self.path, self.headers.get("Range")))
                forwarded = {name: value for name, value in self.headers.items()
                             if name.lower() in ("range", "x-api-key")}
                request = urllib.request.Request(upstream + self.path, headers=forwarded)
                with urllib.request.urlopen(request, timeout=30) as answer:
                    body = answer.read()
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                if self.path.endswith("/result") and proxy.cuts > 0:
                    proxy.cuts -= 1
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection breaks
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_job_is_submitted_followed_and_downloaded_exactly(server, source, tmp_path):
    sent: list[int] = []
    job = submit_job(server.url, source, api_key=KEY, idempotency_key="clients-1",
                     on_sent=sent.append)
    assert job["status"] in ("queued", "running") and sum(sent) == source.stat().st_size
    again = submit_job(server.url, source, api_key=KEY, idempotency_key="clients-1")
    assert again["id"] == job["id"]  # a retried upload returns the same job
    seen: list[dict] = []
    ended = wait_for_job(server.url, job["id"], KEY, on_update=seen.append, timeout_s=60)
    assert ended["status"] == "succeeded" and ended["progress"] == 1
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and seen[-1] == ended
    assert job_status(server.url, job["id"], KEY)["result_url"] == f"/jobs/{job['id']}/result"
    destination = tmp_path / "enhanced.wav"
    assert download_result(server.url, job["id"], destination, KEY) == destination
    _exact(destination)
    assert list(tmp_path.iterdir()) == [destination]  # no partial file left


def test_a_download_cut_halfway_resumes_with_range(server, finished, tmp_path):
    destination = tmp_path / "enhanced.wav"
    with Proxy(server.url, cuts=1) as proxy:
        download_result(proxy.url, finished, destination, KEY)
    _exact(destination)
    size = destination.stat().st_size
    assert [r for path, r in proxy.seen if path.endswith("/result")] == [
        None, f"bytes={size // 2}-"]


def test_a_partial_file_left_by_an_earlier_download_is_resumed(server, finished, tmp_path):
    whole = tmp_path / "whole.wav"
    download_result(server.url, finished, whole, KEY)
    destination = tmp_path / "enhanced.wav"
    partial_path(destination, finished).write_bytes(whole.read_bytes()[:123_456])
    with Proxy(server.url) as proxy:
        download_result(proxy.url, finished, destination, KEY)
    assert proxy.seen == [(f"/jobs/{finished}/result", "bytes=123456-")]
    assert destination.read_bytes() == whole.read_bytes()
    assert not partial_path(destination, finished).exists()


def test_errors_say_the_servers_detail_and_status(server, finished, source, tmp_path):
    with pytest.raises(JobError, match=r"no job nope \(HTTP 404\)") as unknown:
        job_status(server.url, "nope", KEY)
    assert unknown.value.status == 404
    with pytest.raises(JobError, match=r"HTTP 404"):  # another key's job does not exist
        download_result(server.url, finished, tmp_path / "x.wav", "key-of-bob")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(JobError, match=r"HTTP 401"):
        submit_job(server.url, source, api_key="wrong")
    with pytest.raises(JobError, match=r"cannot reach http://127\.0\.0\.1:"):
        job_status(f"127.0.0.1:{_free_port()}", finished, KEY)  # nothing listens there


def test_cancel_job_cancels_a_job_and_deletes_an_ended_one(server, source):
    ended = submit_job(server.url, source, api_key=KEY)["id"]
    assert wait_for_job(server.url, ended, KEY, timeout_s=60)["status"] == "succeeded"
    job = submit_job(server.url, source, api_key=KEY)
    # Queued or running when cancelled, unless the quick passthrough has finished it already.
    status = cancel_job(server.url, job["id"], KEY)["status"]
    assert status in ("cancelled", "succeeded")
    if status == "cancelled":
        with pytest.raises(JobError, match=rf"job {job['id']} is cancelled: no result"):
            download_result(server.url, job["id"], "never.wav", KEY)
    assert cancel_job(server.url, ended, KEY)["status"] == "succeeded"
    with pytest.raises(JobError, match=r"HTTP 404"):
        job_status(server.url, ended, KEY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> subprocess.Popen[str]:
    # A shell's background job ignores SIGINT, children inherit that, and the CLI respects
    # it (as under nohup): start it as a terminal would, so the Ctrl-C tests hold anywhere.
    return subprocess.Popen([sys.executable, str(ROOT / "enhance_file.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_the_cli_sends_a_job_shows_its_progress_and_writes_the_result(server, source,
                                                                      tmp_path):
    destination = tmp_path / "enhanced.wav"
    cli = _cli("--server", server.url, "--job", "--api-key", KEY,
               "--source-file", str(source), "--destination-file", str(destination))
    _, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    lines = err.replace("\r", "\n").splitlines()
    assert lines[0].startswith("job ") and lines[0].endswith((" queued", " running"))
    assert any("100%|" in line and "succeeded" in line for line in lines), err
    _exact(destination)
    assert list(tmp_path.iterdir()) == [destination]


def test_every_job_id_is_one_argument_on_the_command_line():
    """An id that began with "-" (URL-safe base64 did, one time in 64) was taken by argparse
    for an option: ``enhance --job-id ID`` failed with exit 2, and so did the resume command
    the CLI prints when interrupted."""
    parser = build_parser()
    for _ in range(500):
        job_id = new_job_id()
        args = parser.parse_args(["--destination-file", "out.wav", "--server", "http://x",
                                  "--job-id", job_id])
        assert args.job_id == job_id


def test_the_cli_resumes_a_job_by_its_id(server, finished, tmp_path):
    destination = tmp_path / "again.wav"
    cli = _cli("--server", server.url, "--job-id", finished, "--api-key", KEY,
               "--destination-file", str(destination))
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    _exact(destination)


@pytest.mark.parametrize(("args", "said"), [
    (["--job-id", "nope"], "enhance_file.py: error: GET /jobs/nope: no job nope (HTTP 404)"),
    (["--job"], "enhance_file.py: error: POST /jobs: "),
    (["--job", "--api-key", "wrong"], "enhance_file.py: error: POST /jobs: "),
])
def test_cli_errors_exit_2_with_one_line_and_no_file(server, tmp_path, args, said):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF" + bytes(100))  # a WAV header that is no WAV
    destination = tmp_path / "out.wav"
    key = [] if "--api-key" in args else ["--api-key", KEY]
    cli = _cli("--server", server.url, *args, *key, "--source-file", str(junk),
               "--destination-file", str(destination))
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 2 and len(err.splitlines()) == 1 and err.startswith(said), err
    assert sorted(tmp_path.iterdir()) == [junk]


class Running:
    """A loopback service whose job ``j1`` runs for ever; records the methods it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.polled = threading.Event()
        running = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self, job: dict) -> None:
                body = json.dumps(job).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                running.asked.append("GET")
                self.answer({"id": "j1", "status": "running", "progress": 0.25, "eta_s": 30})
                running.polled.set()

            def do_DELETE(self) -> None:
                running.asked.append("DELETE")
                self.answer({"id": "j1", "status": "cancelled", "progress": 0.25})

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize(("flags", "said", "asked"), [
    ([], "enhance_file.py: interrupted: job j1 goes on at {url}; come back with --job-id j1",
     ["GET"]),
    (["--cancel-on-interrupt"], "enhance_file.py: interrupted: job j1 cancelled",
     ["GET", "DELETE"]),
])
def test_ctrl_c_says_the_job_id_or_cancels_the_job(tmp_path, flags, said, asked):
    service = Running()
    try:
        cli = _cli("--server", service.url, "--job-id", "j1", *flags,
                   "--destination-file", str(tmp_path / "out.wav"))
        assert service.polled.wait(60)
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=60)
    finally:
        service.server.shutdown()
        service.server.server_close()
    assert cli.returncode == 130
    assert err.replace("\r", "\n").splitlines()[-1] == said.format(url=service.url), err
    assert service.asked[-len(asked):] == asked and "DELETE" not in service.asked[:-1]
    assert list(tmp_path.iterdir()) == []


def test_a_signal_inside_a_deferred_stretch_waits_for_its_end():
    """What keeps Ctrl-C out of a progress bar's drawing: within ``waiting`` a signal raises
    at once, within ``deferred`` (inside it) only when the stretch ends."""
    from enhancer.apps.enhance_files import Interrupts

    interrupts, reached = Interrupts(), []
    with pytest.raises(KeyboardInterrupt), interrupts.waiting():
        with interrupts.deferred():
            interrupts.deliver(KeyboardInterrupt())  # as the signal handler does
            reached.append("the rest of the stretch")
        reached.append("past the stretch")
    assert reached == ["the rest of the stretch"]
    with pytest.raises(KeyboardInterrupt), interrupts.waiting():
        interrupts.deliver(KeyboardInterrupt())  # no stretch: at once

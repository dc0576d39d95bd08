"""The service under slow, keyless, idle and greedy clients, and under bad settings: a real
server on loopback, as ``make run`` starts it."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.audio_builders import audio_bytes
from tests.helpers import (
    PASSTHROUGH,
    ROOT,
    LiveServer,
    children_of,
    random_audio,
    raw,
    stopped,
    wait_until_gone,
    workers_of,
)

KEY = "s3cret-key"
MULTIPART_HEAD = (b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.raw\"\r\n"
                  b"Content-Type: application/octet-stream\r\n\r\n")


def start_upload(port: int, key: str | None = None, length: int = 1_000_000) -> socket.socket:
    """Open an upload of ``length`` declared bytes and send only its headers and first bytes."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    headers = (f"POST /enhance HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n"
               f"Content-Type: multipart/form-data; boundary=x\r\n")
    if key is not None:
        headers += f"X-API-Key: {key}\r\n"
    connection.sendall(headers.encode() + b"\r\n" + MULTIPART_HEAD)
    return connection


def read_answer(connection: socket.socket) -> str:
    answer = b""
    while b"\r\n\r\n" not in answer or b"}" not in answer:
        try:
            received = connection.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not received:
            break
        answer += received
    return answer.decode(errors="replace")


def good_request(server: LiveServer, key: str | None = None) -> tuple[httpx.Response, float]:
    audio = random_audio(4800, seed=1)
    started = time.monotonic()
    response = httpx.post(f"{server.url}/enhance", files={"file": ("a.raw", raw(audio))},
                          data={"sample_rate": "48000"}, timeout=30,
                          headers={"X-API-Key": key} if key else {})
    elapsed = time.monotonic() - started
    if response.status_code == 200:
        np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), audio * 3)
    return response, elapsed


@pytest.fixture
def empty_models_dir(tmp_path: Path) -> str:
    """A MODELS_DIR with nothing in it: the server runs the passthrough only."""
    folder = tmp_path / "models"
    folder.mkdir()
    return str(folder)


def test_slow_and_keyless_uploads_cost_nothing(empty_models_dir):
    with LiveServer(API_KEY=KEY, MAX_PENDING_REQUESTS="4", MODELS_DIR=empty_models_dir,
                    BODY_TIMEOUT_S="30", MIN_UPLOAD_KBPS="0") as server:
        slow = [start_upload(server.port, KEY) for _ in range(64)]
        keyless = [start_upload(server.port) for _ in range(8)]
        for connection in keyless:  # refused before its body was read
            assert read_answer(connection).startswith("HTTP/1.1 401"), "no 401"
        for _ in range(2):  # the slow ones trickle on
            for connection in slow:
                connection.sendall(b"\x00")
            response, elapsed = good_request(server, KEY)
            assert response.status_code == 200, response.text
            assert elapsed < 2, f"a good request took {elapsed:.1f} s"
        for connection in slow + keyless:
            connection.close()


def test_a_paused_or_crawling_upload_gets_408_and_the_service_goes_on(empty_models_dir):
    with LiveServer(MODELS_DIR=empty_models_dir, BODY_TIMEOUT_S="1",
                    MIN_UPLOAD_KBPS="1000") as server:
        paused = start_upload(server.port)
        answer = read_answer(paused)
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "the upload paused for more than 1 s (BODY_TIMEOUT_S)" in answer
        crawling = start_upload(server.port)
        answer = ""
        deadline = time.monotonic() + 10
        while not answer and time.monotonic() < deadline:
            crawling.sendall(b"\x00" * 100)  # 100 bytes every 0.2 s: 0.5 kB/s
            time.sleep(0.2)
            crawling.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                answer = crawling.recv(65536).decode(errors="replace")
            crawling.setblocking(True)
        assert answer.startswith("HTTP/1.1 408") and "MIN_UPLOAD_KBPS" in answer, answer
        server.assert_serves()


def test_silent_connections_are_closed_after_the_header_timeout(empty_models_dir):
    with LiveServer(MODELS_DIR=empty_models_dir, HEADER_TIMEOUT_S="1") as server:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        partial = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: te")  # never finished
        started = time.monotonic()
        assert silent.recv(1) == b"" and partial.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 5
        server.assert_serves()


def send_header(port: int, size: int, lines: str = "") -> socket.socket:
    """Open a connection and send a GET whose one header field is ``size`` bytes long (its
    headers unfinished unless ``lines`` ends them)."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * size
                       + lines.encode())
    return connection


def test_headers_over_the_limit_get_431_and_cost_no_more_than_the_limit(empty_models_dir):
    limit_kb, connections, senders = 32, 100, 20
    with LiveServer(MODELS_DIR=empty_models_dir, MAX_HEADER_KB=str(limit_kb),
                    MAX_CONNECTIONS=str(connections), HEADER_TIMEOUT_S="60") as server:
        before = rss_mb(server.process.pid)
        sockets: list[socket.socket] = [None] * senders  # type: ignore[list-item]

        def send(i: int) -> None:  # 1 MB of one header on each connection at once
            sockets[i] = send_header(server.port, 1 << 20)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        grown = rss_mb(server.process.pid) - before
        for connection in sockets:
            answer = read_answer(connection)
            assert answer.startswith("HTTP/1.1 431 Request Header Fields Too Large"), answer
            assert (f'{{"detail": "the request\'s headers are larger than the limit of '
                    f'{limit_kb} kB (MAX_HEADER_KB)"}}') in answer
            connection.close()
        # Each connection may hold up to the limit of an unfinished header; no more.
        assert grown < limit_kb * connections / 1024, f"the server grew {grown:.1f} MB"
        under = send_header(server.port, 30_000, "\r\n\r\n")  # within the limit: served
        assert read_answer(under).startswith("HTTP/1.1 200"), "a 30 kB header was refused"
        under.close()
        server.assert_serves()


def test_uvicorn_run_by_hand_with_the_guarded_h11_protocol_has_the_header_limit(
        empty_models_dir):
    uvicorn_by_hand = ["sh", "-c", f'exec "{sys.executable}" -m uvicorn main:app --port '
                       '"$APP_PORT" --http service.http_protocol:GuardedH11Protocol']
    with LiveServer(uvicorn_by_hand, MODELS_DIR=empty_models_dir, MAX_HEADER_KB="24") as server:
        over = send_header(server.port, 1 << 20)
        answer = read_answer(over)
        assert answer.startswith("HTTP/1.1 431") and "24 kB (MAX_HEADER_KB)" in answer, answer
        over.close()
        # Over h11's own 16 kB limit, within MAX_HEADER_KB: served.
        under = send_header(server.port, 20_000, "\r\n\r\n")
        assert read_answer(under).startswith("HTTP/1.1 200"), "a 20 kB header was refused"
        under.close()
        server.assert_serves()


def test_a_client_that_reads_nothing_is_dropped_after_the_write_timeout(empty_models_dir):
    with LiveServer(MODELS_DIR=empty_models_dir, WRITE_TIMEOUT_S="1") as server:
        body = (MULTIPART_HEAD + raw(random_audio(4_000_000, seed=2)) + b"\r\n--x\r\n"
                b"Content-Disposition: form-data; name=\"sample_rate\"\r\n\r\n48000\r\n--x--\r\n")
        connection = socket.socket()
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.connect(("127.0.0.1", server.port))
        connection.sendall(f"POST /enhance HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                           f"Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode()
                           + body)
        time.sleep(6)  # the 16 MB answer cannot be sent: the server gives up after 1 s
        connection.settimeout(10)
        received = 0
        with contextlib.suppress(ConnectionResetError):  # what the kernel held, then the end
            while chunk := connection.recv(1 << 20):
                received += len(chunk)
        assert received < 16_000_000
        assert "read nothing for 1 s: connection dropped" in server.stderr()
        server.assert_serves()


def test_too_many_requests_in_progress_get_503_with_retry_after(empty_models_dir):
    with LiveServer(MAX_PENDING_REQUESTS="1", NUM_PROCESSES="1", MODELS_DIR=empty_models_dir,
                    MIN_BLOCK_DEADLINE_S="60") as server:
        (worker,) = workers_of(server.process.pid)
        with stopped([worker]):  # the first request waits in the pool
            first = {}
            thread = threading.Thread(target=lambda: first.update(r=good_request(server)[0]))
            thread.start()
            time.sleep(1)
            response, _ = good_request(server)
        thread.join()
        assert first["r"].status_code == 200
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "the service is busy: 1 requests are being enhanced" in response.json()["detail"]
        server.assert_serves()


def test_requests_over_the_memory_budget_get_503_or_413(empty_models_dir):
    with LiveServer(MODELS_DIR=empty_models_dir, MAX_INFLIGHT_MB="1") as server:
        too_big = raw(random_audio(300_000, seed=3))  # 1.2 MB: can never fit
        response = httpx.post(f"{server.url}/enhance", files={"file": ("a.raw", too_big)},
                              data={"sample_rate": "48000"}, timeout=30)
        assert response.status_code in (413, 503), response.text
        assert "MB" in response.json()["detail"]
        server.assert_serves()


def test_sigterm_with_a_slow_client_connected_exits_within_the_bound(empty_models_dir):
    server = LiveServer(MODELS_DIR=empty_models_dir, SHUTDOWN_TIMEOUT_S="2",
                        BODY_TIMEOUT_S="60", MIN_UPLOAD_KBPS="0")
    workers = children_of(server.process.pid)
    slow = start_upload(server.port)
    time.sleep(0.5)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(15)
    assert time.monotonic() - started < 2 + 5
    slow.close()
    server.stop()
    assert wait_until_gone(workers), "a process outlived the server"


def test_running_out_of_files_neither_stops_the_service_nor_floods_the_log(empty_models_dir):
    with LiveServer(max_open_files=256, NUM_PROCESSES="1", MODELS_DIR=empty_models_dir,
                    HEADER_TIMEOUT_S="2") as server:
        idle = []
        for _ in range(400):  # more than the server has files for
            try:
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
            except OSError:
                break
        time.sleep(4)  # the header timeout closes the idle ones, freeing their files
        server.assert_serves()
        for connection in idle:
            connection.close()
        assert len(server.stderr()) < 100_000, "the log was flooded"


def test_the_log_summarises_repeated_warnings_but_shows_every_distinct_crash():
    import logging

    from service.server import RepeatFilter

    logger = logging.getLogger("tests.repeat_filter")
    logger.propagate = False
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    logger.addHandler(handler)
    logger.addFilter(RepeatFilter(60))

    def crash(kind: type[Exception]) -> None:
        try:
            raise kind(f"a {kind.__name__} in the app")
        except Exception:  # as uvicorn logs what an ASGI app raises
            logger.exception("Exception in ASGI application\n")

    try:
        for _ in range(5):
            logger.warning("Exceeded concurrency limit.")
        for kind in (KeyError, ValueError, ZeroDivisionError, ValueError, RuntimeError):
            crash(kind)
    finally:
        logger.removeHandler(handler)
    text = logged.getvalue()
    assert text.count("Exceeded concurrency limit.") == 1
    for kind in ("KeyError", "ValueError", "ZeroDivisionError", "RuntimeError"):
        assert f"{kind}: " in text and f"a {kind} in the app" in text, text
    assert text.count("Traceback (most recent call last)") == 4  # the 2nd ValueError: counted


@pytest.mark.parametrize("env, message", [
    ({"API_KEY": ""}, "API_KEY: Value error, must not be empty"),
    ({"API_KEY": "has space"}, "API_KEY: Value error, must be printable ASCII"),
    ({"MAX_UPLOAD_MB": "inf"}, "MAX_UPLOAD_MB: Input should be a finite number"),
    ({"MODELS_DIR": "/nonexistent/models"}, "MODELS_DIR: Value error, folder"),
    ({"TF_MODEL_PATH": "requirements.txt"}, "cannot load model"),
])
def test_bad_settings_and_models_stop_the_start_with_one_line(env, message):
    result = subprocess.run([sys.executable, "main.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_a_bad_model_card_stops_the_start_naming_it(tmp_path):
    (tmp_path / "bad.tflite").write_bytes(PASSTHROUGH.read_bytes())
    (tmp_path / "bad.json").write_text('{"sample_rate": "fast"}')
    result = subprocess.run([sys.executable, "main.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "MODELS_DIR": str(tmp_path)})
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert f"model card {tmp_path / 'bad.json'}: 'sample_rate' must be an integer" in (
        result.stderr)


def test_metrics_are_behind_the_key_when_one_is_set(empty_models_dir):
    with LiveServer(API_KEY=KEY, MODELS_DIR=empty_models_dir) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        assert httpx.get(f"{server.url}/metrics",
                         headers={"X-API-Key": KEY}).status_code == 200
        assert httpx.get(f"{server.url}/health").status_code == 200


def test_several_front_end_processes_share_the_port_and_leave_nothing(empty_models_dir):
    server = LiveServer(FRONTEND_PROCESSES="2", NUM_PROCESSES="2", MODELS_DIR=empty_models_dir)
    front_ends = children_of(server.process.pid)
    everything = front_ends + [pid for front in front_ends for pid in children_of(front)]
    try:
        assert len(everything) >= 4  # 2 front ends (plus a tracker), each with its worker
        for _ in range(12):  # spread over both by the kernel
            response, _ = good_request(server)
            assert response.status_code == 200
    finally:
        server.stop()
    assert wait_until_gone(everything), "a process outlived the server"


# ------------------------------------------------------------------ budgets, over the network


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_bombs_and_liars_get_their_answer_and_memory_stays_within_the_budget(
        empty_models_dir):
    from tests.audio_builders import flac, flac_bomb, tone

    budget_mb = 256
    cases = [
        ("bomb.flac", flac_bomb(), 413, "MAX_DECODED_SAMPLES"),
        ("2^36.flac", flac(tone(48000), 48000, declared=2**36 - 1), 413, "MAX_"),
        ("8k.s16", b"\x00" * 100_000_000, 413, "MAX_"),  # 100 MB of 8 kHz s16le
        ("liar.flac", flac(tone(96_000), 48000, declared=1000), 422, "samples"),
        ("wide.wav", _wav(np.zeros((1024, 16), np.float32)), 413,
         "1024 channels; the limit is MAX_CHANNELS=8"),
        ("clip.m4a", b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 100, 415, "M4A"),
    ]
    with LiveServer(MODELS_DIR=empty_models_dir, MAX_INFLIGHT_MB=str(budget_mb),
                    MAX_DECODED_SAMPLES="20000000", MAX_CHANNELS="8",
                    MAX_UPLOAD_MB="120") as server:
        before = rss_mb(server.process.pid)
        peak = before
        for name, data, status, detail in cases:
            fields = {"sample_rate": "8000", "format": "s16le"} if name.endswith(".s16") else {}
            response = httpx.post(f"{server.url}/enhance", files={"file": (name, data)},
                                  data=fields, timeout=60)
            peak = max(peak, rss_mb(server.process.pid))
            assert response.status_code == status, (name, response.text)
            assert detail in response.json()["detail"], (name, response.json())
            server.assert_serves()
        unknown = flac(tone(48000 * 3), 48000, declared=0)  # what encoders write to a pipe
        response = httpx.post(f"{server.url}/enhance", files={"file": ("pipe.flac", unknown)},
                              timeout=60)
        assert response.status_code == 200, response.text
        assert len(response.content) > 0
        import soundfile as sf

        assert sf.info(io.BytesIO(response.content)).frames == 48000 * 3
        # The 100 MB body itself is held while it is read: that, not decoding, is the peak.
        assert peak - before < budget_mb, f"server grew {peak - before:.0f} MB"


def _wav(samples: np.ndarray) -> bytes:
    return audio_bytes(samples.T, 48000, "WAV", "FLOAT")

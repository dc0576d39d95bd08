"""Attacks on ``WebSocket /enhance/stream``, on a real server: clients that never read,
samples the model cannot take, deeply nested text. Each ends the attacker's stream with a
code and a reason, frees its slot and its memory, and leaves the service serving."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import select
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from enhancer import AudioEnhancer
from enhancer.apps.client import stream_enhance_sync
from enhancer.audio.formats import MAX_SAMPLE_MAGNITUDE
from enhancer.errors import InvalidAudio
from tests.helpers import DENOISER, LiveServer, random_audio, raw, same_bits

SEND_TIMEOUT_S = 2.0
ATTACKERS = 64
SECOND = 48000 * 4  # bytes of 1 s of 48 kHz mono f32le


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def never_reading_client(port: int) -> socket.socket:
    """A stream opened by hand on a socket with a 4 kB receive buffer, the handshake's
    answer read and nothing after it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /enhance/stream?sample_rate=48000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)  # byte by byte: nothing after the headers is read
    assert answer.startswith(b"HTTP/1.1 101"), answer
    sock.setblocking(False)
    return sock


def audio_frame(payload: bytes) -> bytes:
    """A masked binary WebSocket frame (mask 0: the payload as is)."""
    return b"\x82\xff" + len(payload).to_bytes(8, "big") + b"\x00" * 4 + payload


def attack(sockets: list[socket.socket], deadline: float) -> tuple[list[float], list[float]]:
    """Send 1 s audio frames on every socket as fast as the server takes them, read nothing;
    return, per socket, when it last took bytes and when the server dropped it."""
    frame = audio_frame(np.full(SECOND // 4, 0.1, "<f4").tobytes())
    offsets = [0] * len(sockets)
    progress = [time.monotonic()] * len(sockets)
    dropped = [0.0] * len(sockets)
    poller = select.poll()
    index = {s.fileno(): i for i, s in enumerate(sockets)}
    for sock in sockets:
        poller.register(sock, select.POLLOUT | select.POLLRDHUP)
    while not all(dropped) and time.monotonic() < deadline:
        for fd, events in poller.poll(200):
            i = index[fd]
            if events & (select.POLLHUP | select.POLLERR | select.POLLRDHUP):
                dropped[i] = time.monotonic()
                poller.unregister(fd)
                continue
            try:
                sent = sockets[i].send(frame[offsets[i]:] or frame)
            except OSError:
                dropped[i] = time.monotonic()
                poller.unregister(fd)
                continue
            offsets[i] = (offsets[i] + sent) % len(frame)
            progress[i] = time.monotonic()
    return progress, dropped


def test_clients_that_never_read_are_dropped_and_their_memory_freed(tmp_path):
    """64 clients fill every stream slot and read nothing: each is closed within
    STREAM_SEND_TIMEOUT_S + 5 s of the server's last read from it, a good stream then opens,
    and the server's memory comes back."""
    with LiveServer(MODELS_DIR=str(tmp_path), MAX_STREAMS=str(ATTACKERS),
                    STREAM_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S)) as server:
        audio = random_audio(48000, seed=1)
        good = np.concatenate(list(stream_enhance_sync(
            f"ws://127.0.0.1:{server.port}/enhance/stream", [audio], 48000)))
        assert same_bits(good, audio * np.float32(3))
        before = rss_mb(server.process.pid)
        sockets = [never_reading_client(server.port) for _ in range(ATTACKERS)]
        try:
            progress, dropped = attack(sockets, time.monotonic() + 120)
        finally:
            for sock in sockets:
                sock.close()
        assert all(dropped), f"{dropped.count(0.0)} of {ATTACKERS} never closed"
        late = max(d - p for d, p in zip(dropped, progress, strict=True))
        assert late <= SEND_TIMEOUT_S + 5, late
        good = np.concatenate(list(stream_enhance_sync(
            f"ws://127.0.0.1:{server.port}/enhance/stream", [audio], 48000)))
        assert same_bits(good, audio * np.float32(3))
        deadline = time.monotonic() + 15  # the memory goes back a moment after the streams
        while (after := rss_mb(server.process.pid)) - before > 20:
            assert time.monotonic() < deadline, (before, after)
            time.sleep(0.2)
        assert "Traceback" not in server.stderr()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    models = tmp_path_factory.mktemp("models")
    for name in ("denoiser_48k.tflite", "denoiser_48k.json"):
        (models / name).write_bytes((DENOISER.parent / name).read_bytes())
    with LiveServer(MODELS_DIR=str(models)) as running:
        yield running


def close_of(server: LiveServer, query: str, messages: list[bytes | str]) -> tuple[
        bytes, int | None, str | None]:
    """Send ``messages`` on a new stream; the audio that came back and how it was closed."""
    out = bytearray()
    with connect(f"ws://127.0.0.1:{server.port}/enhance/stream{query}",
                 max_size=None) as websocket:
        assert json.loads(websocket.recv())["type"] == "ready"
        try:
            for message in messages:
                websocket.send(message)
            while True:
                message = websocket.recv(timeout=30)
                if isinstance(message, bytes):
                    out += message
        except Exception:  # the close arrives as ConnectionClosed
            pass
        return bytes(out), websocket.close_code, websocket.close_reason


LOUD_REASON = "holds 1 sample of magnitude over MAX_SAMPLE_MAGNITUDE=1e+10"


@pytest.mark.parametrize("magnitude", [1e17, 1e20, -3e38])
def test_a_chunk_the_model_cannot_take_closes_the_stream_before_it_touches_the_state(
        server, magnitude):
    """Finite samples too large for the denoiser: refused with 4422, and the audio before
    them came back as it would have without them (finite: the state was never poisoned)."""
    audio = random_audio(48000, seed=2)
    loud = audio[:4800].copy()
    loud[100] = magnitude
    out, code, reason = close_of(server, "?sample_rate=48000&model=denoiser_48k",
                                 [raw(audio), raw(loud), raw(audio)])
    assert code == 4422 and LOUD_REASON in (reason or ""), (code, reason)
    assert np.isfinite(np.frombuffer(out, "<f4")).all()


def test_the_library_refuses_the_same_samples_and_the_stream_goes_on():

    async def pushes(enhancer: AudioEnhancer) -> np.ndarray:
        stream = enhancer.open_stream(48000)
        first = await stream.push(random_audio(4800, seed=3))
        with pytest.raises(InvalidAudio, match=re.escape(LOUD_REASON)):
            await stream.push(np.array([0.1, 1e20], np.float32))
        rest = [await stream.push(random_audio(96000, seed=4)), await stream.finish()]
        return np.concatenate([first, *rest])

    with AudioEnhancer(DENOISER, num_processes=1) as enhancer:
        out = asyncio.run(pushes(enhancer))
        assert out.shape[0] == 4800 + 96000 and np.isfinite(out).all()
        assert np.abs(out).max() > 0
        edge = np.full(480, MAX_SAMPLE_MAGNITUDE, np.float32)  # the limit itself is taken
        assert np.isfinite(enhancer.enhance(edge, 48000)).all()


def test_post_refuses_the_same_samples_counting_the_input_as_sent(server):
    audio = random_audio(16000, seed=5)
    audio[[10, 20, 30]] = [1e20, -1e18, 5e11]
    response = httpx.post(f"{server.url}/enhance", files={"file": ("a.raw", raw(audio))},
                          data={"sample_rate": "16000", "model": "denoiser_48k"}, timeout=60)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "holds 3 samples of magnitude over MAX_SAMPLE_MAGNITUDE=1e+10" in detail, detail


@pytest.mark.parametrize("text", ["[" * 100_000, "{\"a\": " * 5000])
def test_a_deep_or_long_text_message_closes_with_4400(server, text):
    _, code, reason = close_of(server, "?sample_rate=48000", [text])
    assert code == 4400 and 'text messages must be {"type": "end"}' in (reason or ""), (
        code, reason)
    assert "RecursionError" not in server.stderr()
    # A short nesting is parsed, found not to be the end, and refused the same way.
    _, code, _ = close_of(server, "?sample_rate=48000", ["[" * 200])
    assert code == 4400

"""Soak: mixed load on a live server for a while; nothing lost, nothing leaked.

For ``--seconds`` (600 by default) a ``python main.py`` with the ×3 passthrough (so every
answer can be checked exactly) gets, at once:

- good requests of random length, rate and format, each checked sample for sample;
- bad inputs (truncated, NaN, wrong sizes, unsupported containers), each expecting its 4xx;
- slow clients that trickle a body and give up;
- live streams, each checked sample for sample;
- attacks on streams: clients that never read (8 at a time, each to be dropped within
  STREAM_SEND_TIMEOUT_S + 5 s), chunks of samples too loud for the model (4422), deeply
  nested JSON text (4400);
- every 20 s a worker killed (SIGKILL) or stopped (SIGSTOP, so the watchdog must act).

At the end: every good request was answered (200, or a 503 for one held by a killed worker,
retried), the server's memory in the last minute is within 10 % of the second, and SIGTERM
leaves no process. Run: ``make soak`` (or ``python -m bench.soak --seconds 60``); the result
is printed and written to ``bench/soak.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.docs_sections import update_section
from enhancer.apps.client import StreamError, stream_enhance
from tests.helpers import ROOT, LiveServer, children_of, raw, wait_until_gone, workers_of
from tests.test_stream_attacks import attack, close_of, never_reading_client

SEND_TIMEOUT_S = 2.0

RESULTS = ROOT / "bench" / "soak.md"


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []

    def add(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def good_requests(url: str, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.is_set():
            rate = int(rng.choice([8000, 16000, 44100, 48000]))
            audio = (rng.standard_normal(int(rng.integers(1, 5 * rate))) * 0.1).astype(
                np.float32)
            for _ in range(3):  # a request held by a killed worker gets 503: retry
                response = http.post("/enhance", files={"file": ("a.raw", raw(audio))},
                                     data={"sample_rate": str(rate),
                                           "model": "passthrough_model_lite"})
                if response.status_code != 503:
                    break
                tally.add("good: 503, retried")
            if response.status_code != 200:
                tally.fail(f"good request got {response.status_code}: {response.text[:200]}")
                continue
            got = np.frombuffer(response.content, "<f4")
            if rate == 48000:
                ok = np.array_equal(got, audio * np.float32(3))
            else:
                ok = got.shape == audio.shape
            tally.add("good: exact" if ok else "good: WRONG")
            if not ok:
                tally.fail(f"good request at {rate} Hz came back wrong")


BAD_INPUTS = [
    (b"\x00" * 7, {"sample_rate": "48000"}, 422),
    (np.array([0.1, np.nan], "<f4").tobytes(), {"sample_rate": "48000"}, 422),
    (b"OggS" + b"\x00" * 500, {}, 422),
    (b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 100, {}, 415),
    (b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 30, {}, 422),
    (b"\x00" * 8, {"sample_rate": "7"}, 422),
]


def bad_requests(url: str, stop: threading.Event, tally: Tally) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.is_set():
            for body, fields, status in BAD_INPUTS:
                response = http.post("/enhance", files={"file": ("x.bin", body)}, data=fields)
                if response.status_code != status:
                    tally.fail(f"bad input expected {status}, got {response.status_code}")
                tally.add("bad: answered")
            time.sleep(0.2)


def slow_clients(port: int, stop: threading.Event, tally: Tally) -> None:
    while not stop.is_set():
        connections = []
        for _ in range(8):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            connection.sendall(b"POST /enhance HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                               b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x")
            connections.append(connection)
        for _ in range(3):
            time.sleep(1)
            for connection in connections:
                with contextlib.suppress(OSError):  # the server may have given up on it
                    connection.sendall(b"\x00")
        for connection in connections:
            connection.close()
        tally.add("slow: 8 trickled and left")


def streams(port: int, stop: threading.Event, tally: Tally) -> None:
    url = f"ws://127.0.0.1:{port}/enhance/stream"
    rng = np.random.default_rng(7)

    async def one() -> None:
        audio = (rng.standard_normal(int(rng.integers(4800, 96000))) * 0.1).astype(np.float32)
        chunks = [audio[i:i + 480] for i in range(0, len(audio), 480)]
        try:
            parts = [p async for p in stream_enhance(url, chunks, 48000,
                                                     model="passthrough_model_lite")]
        except StreamError as exc:
            if exc.code == 1011:  # a killed worker held a chunk: the stream says so
                tally.add("stream: ended by a killed worker")
                return
            tally.fail(f"stream closed: {exc}")
            return
        ok = np.array_equal(np.concatenate(parts), audio * np.float32(3))
        tally.add("stream: exact" if ok else "stream: WRONG")
        if not ok:
            tally.fail("a stream came back wrong")

    while not stop.is_set():
        asyncio.run(one())


def stream_attacks(server: LiveServer, stop: threading.Event, tally: Tally) -> None:
    loud = np.full(4800, 0.1, "<f4")
    loud[7] = 1e20
    while not stop.is_set():
        try:
            sockets = [never_reading_client(server.port) for _ in range(8)]
            try:
                progress, dropped = attack(sockets, time.monotonic() + 60)
            finally:
                for sock in sockets:
                    sock.close()
            late = [d - p for d, p in zip(dropped, progress, strict=True) if d]
            if not all(dropped) or max(late) > SEND_TIMEOUT_S + 5:
                tally.fail(f"never-reading clients: {dropped.count(0.0)} not dropped, "
                           f"the last after {max(late, default=0):.1f} s")
            tally.add("attack: 8 never-reading clients dropped")
            attacks: list[tuple[bytes | str, int]] = [(raw(loud), 4422), ("[" * 100_000, 4400)]
            for message, code in attacks:
                got = close_of(server, "?sample_rate=48000", [message])[1]
                if got != code:
                    tally.fail(f"stream attack expected {code}, got {got}")
                tally.add(f"attack: closed with {code}")
        except Exception as exc:  # any failure is the soak's result
            tally.fail(f"stream attack failed: {exc!r}")
        stop.wait(2)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(seconds: float) -> int:
    tally = Tally()
    stop = threading.Event()
    server = LiveServer(MIN_BLOCK_DEADLINE_S="2", BODY_TIMEOUT_S="2", MIN_UPLOAD_KBPS="0",
                        STREAM_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S))
    everything = children_of(server.process.pid)
    threads = [threading.Thread(target=good_requests, args=(server.url, stop, tally, s))
               for s in range(3)]
    threads += [threading.Thread(target=bad_requests, args=(server.url, stop, tally)),
                threading.Thread(target=slow_clients, args=(server.port, stop, tally)),
                threading.Thread(target=streams, args=(server.port, stop, tally)),
                threading.Thread(target=stream_attacks, args=(server, stop, tally))]
    for thread in threads:
        thread.start()
    memory: list[tuple[float, float]] = []
    started = time.monotonic()
    next_fault = started + 20
    rng = random.Random(1)
    try:
        while time.monotonic() - started < seconds:
            time.sleep(1)
            memory.append((time.monotonic() - started, rss_mb(server.process.pid)))
            everything += [p for p in children_of(server.process.pid) if p not in everything]
            if time.monotonic() >= next_fault:
                next_fault += 20
                victim = rng.choice(workers_of(server.process.pid))
                if rng.random() < 0.5:
                    os.kill(victim, signal.SIGKILL)
                    tally.add("fault: worker killed")
                else:
                    os.kill(victim, signal.SIGSTOP)
                    tally.add("fault: worker stopped")
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
        if any(thread.is_alive() for thread in threads):
            tally.fail("a client thread is stuck: a request went unanswered")
        server.stop()
    leftovers = not wait_until_gone(everything, 15)
    second = [mb for t, mb in memory if 60 <= t < 120] or [mb for t, mb in memory[:10]]
    last = [mb for t, mb in memory if t >= memory[-1][0] - 60]
    growth = (np.mean(last) - np.mean(second)) / np.mean(second)
    lines = [f"# Soak (`python -m bench.soak --seconds {seconds:g}`)", "",
             f"{seconds:g} s of mixed load on `python main.py` (2 workers, ×3 passthrough).", "",
             "| what | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(tally.counts.items())]
    lines += ["", f"Server memory: second minute {np.mean(second):.0f} MB, last minute "
                  f"{np.mean(last):.0f} MB ({growth * 100:+.1f} %; limit ±10 %).",
              f"Failures: {len(tally.failures)}" + "".join(f"\n- {f}" for f in
                                                             tally.failures[:20]),
              f"Processes left after SIGTERM: {'some' if leftovers else 'none'}."]
    RESULTS.write_text("\n".join(lines) + "\n")
    update_section("soak")
    print("\n".join(lines))
    return 0 if not tally.failures and not leftovers and abs(growth) <= 0.10 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    raise SystemExit(main(parser.parse_args().seconds))

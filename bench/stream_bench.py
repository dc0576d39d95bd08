"""Live streams under load: added latency per chunk, and how many real-time streams fit.

Real-time streams of 48 kHz audio in 10 ms chunks (sent at the pace of the audio, as a
microphone would) go through ``WebSocket /enhance/stream`` of a ``python main.py`` with the
denoiser and 2 workers. The added latency is measured by the client, which is what a caller
lives with: for each chunk that completes a frame, the time from sending it to receiving the
enhanced samples that frame makes ready. It therefore includes every queue on the way (socket
buffers, the server's event loop, the pool) and a stream that falls behind real time shows as
growing latency. The framing's own delay (the samples up to the next hop boundary plus one
hop: 10.7 to 21.3 ms for 1024-sample frames at hop 512) comes on top of it for any causal
frame-based model. Each stream's own summary (the server's time from reading a message to
sending its output) is not used: it cannot see the time a chunk waits before it is read.

Run: ``python -m bench.stream_bench`` (part of ``make bench``); writes
``bench/stream_results.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.readme import update_section
from enhancer.client import StreamError, stream_enhance
from tests.helpers import DENOISER, ROOT, LiveServer, children_of

RESULTS = ROOT / "bench" / "stream_results.md"
RATE = 48000
CHUNK = 480  # 10 ms
SECONDS = 6.0
TARGET_P99_MS = 30.0
TRIED = (16, 20, 24, 28, 32, 40, 48, 64, 96, 128)  # stream counts, until the p99 passes 30 ms
_CARD = json.loads(DENOISER.with_suffix(".json").read_text())
FRAME, HOP = _CARD["frame_length"], _CARD["hop_length"]


def speech(seconds: float) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(ROOT / "audio_samples" / "speech_48000.wav", dtype="float32")
    assert rate == RATE
    reps = int(np.ceil(seconds * RATE / len(audio)))
    return np.tile(audio, reps)[: int(seconds * RATE)]


def ready_after(samples_in: int) -> int:
    """Output samples a stream can have once ``samples_in`` samples are in, were processing
    instant: the hops of the frames completed, less the one-frame lead-in."""
    return max(0, (samples_in // HOP - FRAME // HOP + 1) * HOP)


async def one_stream(url: str, audio: np.ndarray) -> list[float]:
    """Stream ``audio`` in real time; the added latency of each frame-completing chunk, s."""
    sent_at: list[tuple[float, int]] = []  # (time, samples sent so far)

    async def chunks():
        for i in range(0, len(audio), CHUNK):
            sent_at.append((time.monotonic(), min(len(audio), i + CHUNK)))
            yield audio[i:i + CHUNK]  # sent right after this, before the next is asked for

    received: list[tuple[float, int]] = []
    total = 0
    async for part in stream_enhance(url, chunks(), RATE, realtime=True):
        total += len(part)
        received.append((time.monotonic(), total))
    assert total == len(audio), (total, len(audio))
    latencies, cursor, previous = [], 0, 0
    for when, samples_in in sent_at:
        wanted = ready_after(samples_in)
        if wanted <= previous:
            continue  # this chunk completes no frame: nothing is due for it
        previous = wanted
        while received[cursor][1] < wanted:
            cursor += 1
        latencies.append(received[cursor][0] - when)
    return latencies


async def streams(url: str, count: int, audio: np.ndarray) -> list[list[float]]:
    async def staggered(index: int) -> list[float]:
        await asyncio.sleep(index * 0.01 / max(1, count / 10))  # not all on the same tick
        return await one_stream(url, audio)

    return await asyncio.gather(*(staggered(i) for i in range(count)))


def latency(per_stream: list[list[float]]) -> tuple[float, float]:
    """Median of the streams' p50s and the worst stream's p99, ms."""
    p50 = statistics.median(float(np.percentile(s, 50)) for s in per_stream) * 1000
    p99 = max(float(np.percentile(s, 99)) for s in per_stream) * 1000
    return p50, p99


def service_cpu_seconds(pid: int) -> float:
    """CPU time so far of the server process and its worker processes."""
    total = 0.0
    for process in (pid, *children_of(pid)):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run() -> list[str]:
    audio = speech(SECONDS)
    rows = []
    with LiveServer(TF_MODEL_PATH=str(DENOISER), MAX_STREAMS="512",
                    MAX_CONNECTIONS="2000") as server:
        url = f"ws://127.0.0.1:{server.port}/enhance/stream"
        asyncio.run(streams(url, 2, audio[:RATE]))  # warm up
        by_count = {}
        for count in (1, 16, 64):
            cpu = service_cpu_seconds(server.process.pid)
            p50, p99 = latency(asyncio.run(streams(url, count, audio)))
            cpu = service_cpu_seconds(server.process.pid) - cpu
            by_count[count] = (p50, p99)
            rows.append(f"| {count} real-time streams | {p50:.2f} ms | {p99:.2f} ms |")
            print(rows[-1], file=sys.stderr)
            if count == 16:  # light enough to keep up: what one stream costs the service
                per_stream = cpu / (count * SECONDS)
                rows.append(f"| CPU of the service (API process and workers) per real-time "
                            f"stream, at 16 streams | {per_stream:.3f} cores | 64 streams: "
                            f"{64 * per_stream:.1f} cores |")
        most = 0
        for count in TRIED:
            try:
                p50, p99 = latency(asyncio.run(streams(url, count, audio)))
            except StreamError as exc:  # overloaded: the load generator itself falls behind
                print(f"{count} streams: {exc}", file=sys.stderr)
                break
            print(f"{count} streams: p50 {p50:.2f} p99 {p99:.2f}", file=sys.stderr)
            if p99 > TARGET_P99_MS:
                break
            most = count
        rows.append(f"| most real-time streams with p99 ≤ {TARGET_P99_MS:g} ms (tried "
                    f"{', '.join(map(str, TRIED))}) | {most} | target ≥ 64 |")

        # The same 16 streams while a 10-minute file is enhanced by POST /enhance.
        long_file = (speech(600.0) * 32767).astype("<i2").tobytes()
        done = threading.Event()

        def upload() -> None:
            response = httpx.post(f"{server.url}/enhance", timeout=600,
                                  files={"file": ("long.s16", long_file)},
                                  data={"sample_rate": str(RATE), "format": "s16le"})
            assert response.status_code == 200, response.text
            done.set()

        thread = threading.Thread(target=upload)
        thread.start()
        time.sleep(1.0)  # the upload is in and being enhanced
        p50, p99 = latency(asyncio.run(streams(url, 16, audio)))
        busy_while_streaming = not done.is_set()
        thread.join()
        base = by_count[16][1]
        rows.append(f"| 16 streams while a 10-minute file is enhanced | {p50:.2f} ms | "
                    f"{p99:.2f} ms ({p99 / base:.2f}× the p99 without it; target ≤ 1.5×; "
                    f"file still running at the end: {busy_while_streaming}) |")
    return rows


def main() -> None:
    rows = run()
    table = "| case | p50 | p99 |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    update_section("stream", table)
    RESULTS.write_text(
        "# Live streams (`python -m bench.stream_bench`)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; server `python main.py`, denoiser_48k, 2 workers; "
        f"48 kHz mono, 10 ms chunks sent in real time, {SECONDS:g} s per stream. Added "
        "latency, measured by the client: from sending a chunk that completes a frame to "
        "receiving the samples that frame makes ready, on top of the framing's own 10.7-21.3 "
        "ms (median of the streams' p50s, worst stream's p99).\n\n"
        "| case | p50 | p99 |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()

"""Live streams under load: added latency per chunk, and how many real-time streams fit.

Real-time streams of 48 kHz audio in 10 ms chunks (sent at the pace of the audio, as a
microphone would) go through ``WebSocket /enhance/stream`` of a ``python main.py`` with the
denoiser and 2 workers. The added latency is the server's time from a chunk's arrival to its
enhanced samples leaving (each stream's summary reports its p50 and p99); the framing's own
21.3 ms (one 1024-sample frame) comes on top of it for any causal frame-based model.

Run: ``python -m bench.stream_bench`` (part of ``make bench``); writes
``bench/stream_results.md``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import threading
import time

import httpx
import numpy as np

from bench.readme import update_section
from enhancer.client import StreamError, StreamSummary, stream_enhance
from tests.helpers import DENOISER, ROOT, LiveServer

RESULTS = ROOT / "bench" / "stream_results.md"
RATE = 48000
CHUNK = 480  # 10 ms
SECONDS = 6.0
TARGET_P99_MS = 30.0


def speech(seconds: float) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(ROOT / "audio_samples" / "speech_48000.wav", dtype="float32")
    assert rate == RATE
    reps = int(np.ceil(seconds * RATE / len(audio)))
    return np.tile(audio, reps)[: int(seconds * RATE)]


async def one_stream(url: str, audio: np.ndarray) -> StreamSummary:
    summary = StreamSummary()
    chunks = [audio[i:i + CHUNK] for i in range(0, len(audio), CHUNK)]
    received = 0
    async for part in stream_enhance(url, chunks, RATE, realtime=True, summary=summary):
        received += len(part)
    assert received == len(audio), (received, len(audio))
    return summary


async def streams(url: str, count: int, audio: np.ndarray) -> list[StreamSummary]:
    async def staggered(index: int) -> StreamSummary:
        await asyncio.sleep(index * 0.01 / max(1, count / 10))  # not all on the same tick
        return await one_stream(url, audio)

    return await asyncio.gather(*(staggered(i) for i in range(count)))


def latency(summaries: list[StreamSummary]) -> tuple[float, float]:
    """Median of the streams' p50s and the worst stream's p99, ms."""
    p50 = statistics.median(s.latency_ms["p50"] for s in summaries if s.latency_ms)
    p99 = max(s.latency_ms["p99"] for s in summaries if s.latency_ms)
    return p50, p99


def run() -> list[str]:
    audio = speech(SECONDS)
    rows = []
    with LiveServer(TF_MODEL_PATH=str(DENOISER), MAX_STREAMS="512",
                    MAX_CONNECTIONS="2000") as server:
        url = f"ws://127.0.0.1:{server.port}/enhance/stream"
        asyncio.run(streams(url, 2, audio[:RATE]))  # warm up
        by_count = {}
        for count in (1, 16, 64):
            p50, p99 = latency(asyncio.run(streams(url, count, audio)))
            by_count[count] = (p50, p99)
            rows.append(f"| {count} real-time streams | {p50:.2f} ms | {p99:.2f} ms |")
            print(rows[-1], file=sys.stderr)
        most = 0
        for count in (16, 24, 32, 48, 64, 96, 128):
            try:
                p50, p99 = latency(asyncio.run(streams(url, count, audio)))
            except StreamError as exc:  # overloaded: the load generator itself falls behind
                print(f"{count} streams: {exc}", file=sys.stderr)
                break
            print(f"{count} streams: p50 {p50:.2f} p99 {p99:.2f}", file=sys.stderr)
            if p99 > TARGET_P99_MS:
                break
            most = count
        rows.append(f"| most real-time streams with p99 ≤ {TARGET_P99_MS:g} ms (tried 16, 24, "
                    f"32, 48, 64, 96, 128) | {most} | target ≥ 64 |")

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
        "latency: the server's time from a chunk's arrival to its enhanced samples leaving "
        "(median of the streams' p50s, worst stream's p99).\n\n"
        "| case | p50 | p99 |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()

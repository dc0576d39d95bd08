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
Percentiles are over the chunks of all streams together.

The 10-minute file is posted by another process, as a real client would be, as a raw body;
its interference is the p99 of the chunks sent between its last byte going out and its answer
coming back (while the pool enhances it), and, for the whole picture, of every chunk.

Run: ``python -m bench.stream_bench`` (part of ``make bench``); writes
``bench/stream_results.md``, which ``docs/benchmarks.md`` shows. On a machine with many cores,
``python -m bench.stream_bench --frontends 4 --workers 12 --clients 4 --out FILE`` serves from
4 front-end processes (``FRONTEND_PROCESSES``) with 3 workers each and spreads the load
generator over 4 processes, so that it does not become the bottleneck itself.
``--model passthrough --out FILE`` runs the same bench on the passthrough model, which costs
the workers next to nothing: what is left is the service's own cost per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench.docs_sections import update_for
from enhancer.apps.client import StreamError, stream_enhance
from tests.helpers import DENOISER, ROOT, LiveServer, children_of, cpu_seconds, workers_of

RESULTS = ROOT / "bench" / "stream_results.md"
RATE = 48000
CHUNK = 480  # 10 ms
SECONDS = 6.0
TARGET_P99_MS = 30.0
UPLOAD_REPEATS = 5
# Stream counts, until the p99 passes 30 ms.
TRIED = (8, 12, 16, 20, 24, 28, 32, 40, 48, 64, 96, 128, 160, 192, 256, 320)
MODELS = {"denoiser": DENOISER,
          "deepfilternet3": ROOT / "models" / "deepfilternet3_step.tflite",
          # Costs the pool next to nothing: what is left is the front end's and the pipe's cost.
          "passthrough": ROOT / "models" / "passthrough_model_lite.tflite"}


# The model's frame, hop and own delay (its look-ahead), which say when output is due.
Framing = tuple[int, int, int]


def framing_of(model: Path) -> Framing:
    card = json.loads(model.with_suffix(".json").read_text())
    return card["frame_length"], card["hop_length"], card.get("latency_samples", 0)


def speech(seconds: float) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(ROOT / "audio_samples" / "speech_48000.wav", dtype="float32")
    assert rate == RATE
    reps = int(np.ceil(seconds * RATE / len(audio)))
    return np.tile(audio, reps)[: int(seconds * RATE)]


def ready_after(samples_in: int, framing: Framing) -> int:
    """Output samples a stream can have once ``samples_in`` samples are in, were processing
    instant: the hops of the frames completed, less the one-frame lead-in and the model's own
    delay."""
    frame, hop, delay = framing
    return max(0, (samples_in // hop - frame // hop + 1) * hop - delay)


async def one_stream(url: str, audio: np.ndarray,
                     framing: Framing) -> list[tuple[float, float]]:
    """Stream ``audio`` in real time; when each frame-completing chunk was sent and its added
    latency, s."""
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
        wanted = ready_after(samples_in, framing)
        if wanted <= previous:
            continue  # this chunk completes no frame: nothing is due for it
        previous = wanted
        while received[cursor][1] < wanted:
            cursor += 1
        latencies.append((when, received[cursor][0] - when))
    return latencies


async def streams(url: str, count: int, audio: np.ndarray,
                  framing: Framing) -> list[list[tuple[float, float]]]:
    async def staggered(index: int) -> list[tuple[float, float]]:
        await asyncio.sleep(index * 0.01 / max(1, count / 10))  # not all on the same tick
        return await one_stream(url, audio, framing)

    return await asyncio.gather(*(staggered(i) for i in range(count)))


@functools.cache
def _speech() -> np.ndarray:
    return speech(SECONDS)


def _client_streams(url: str, count: int,
                    framing: Framing) -> list[list[tuple[float, float]]]:
    """``count`` streams from a load-generator process (its monotonic clock is the system's,
    so its times compare with the upload's)."""
    return asyncio.run(streams(url, count, _speech(), framing)) if count else []


class LoadGenerator:
    """Real-time streams from this process, or spread over ``processes`` processes when one
    would not keep up (many streams on a machine with many cores), to a model of
    ``framing``."""

    def __init__(self, processes: int, framing: Framing) -> None:
        self.processes = processes
        self.framing = framing
        self._pool = (ProcessPoolExecutor(processes, mp_context=get_context("spawn"))
                      if processes > 1 else None)
        if self._pool is not None:  # started and warm before anything is timed
            list(self._pool.map(_speech_length, range(processes)))

    def run(self, url: str, count: int) -> list[list[tuple[float, float]]]:
        if self._pool is None:
            return _client_streams(url, count, self.framing)
        shares = [count // self.processes + (i < count % self.processes)
                  for i in range(self.processes)]
        futures = [self._pool.submit(_client_streams, url, share, self.framing)
                   for share in shares]
        return [stream for future in futures for stream in future.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _speech_length(_: int) -> int:
    return len(_speech())


def latency(per_stream: list[list[tuple[float, float]]],
            window: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float]:
    """p50 and p99 over every stream's chunks sent within ``window`` (monotonic times), ms."""
    kept = [lat for s in per_stream for when, lat in s if window[0] <= when <= window[1]]
    p50, p99 = np.percentile(kept, [50, 99]) * 1000
    return float(p50), float(p99)


# POST /enhance from another process (as a real client is), the body raw: prints when the body
# was sent and when the answer came, in the same monotonic clock as this process's.
UPLOAD = """
import json, sys, time, httpx
marks = {}
def body():
    with open(sys.argv[2], "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk
    marks["sent"] = time.monotonic()
response = httpx.post(sys.argv[1], content=body(), timeout=600,
                      headers={"content-type": "application/octet-stream"})
marks["done"] = time.monotonic()
assert response.status_code == 200, response.text
print(json.dumps(marks))
"""


def streams_with_upload(server: LiveServer, url: str, load: LoadGenerator,
                        count: int) -> tuple[list[list[tuple[float, float]]], dict]:
    """``count`` streams, and a 10-minute file posted to /enhance half a second in."""
    with tempfile.NamedTemporaryFile(suffix=".s16") as long_file:
        long_file.write((speech(600.0) * 32767).astype("<i2").tobytes())
        long_file.flush()

        def upload() -> dict:
            time.sleep(0.5)
            result = subprocess.run(
                [sys.executable, "-c", UPLOAD,
                 f"{server.url}/enhance?sample_rate={RATE}&format=s16le", long_file.name],
                capture_output=True, text=True, check=True)
            return json.loads(result.stdout)

        with ThreadPoolExecutor(1) as pool:
            marks = pool.submit(upload)
            per_stream = load.run(url, count)
            return per_stream, marks.result()


def descendants(pid: int) -> list[int]:
    """``pid``'s child processes, theirs, and so on."""
    found = children_of(pid)
    return [*found, *(d for child in found for d in descendants(child))]


def service_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time so far of the server process, its front ends and their workers; and of the
    workers alone."""
    everyone = (pid, *descendants(pid))
    workers = {w for process in everyone for w in workers_of(process)}
    return (sum(cpu_seconds(process) for process in everyone),
            sum(cpu_seconds(process) for process in workers))


def run(frontends: int = 1, workers: int = 2, clients: int = 1,
        upload_streams: int = 16, model: Path = DENOISER) -> list[str]:
    load = LoadGenerator(clients, framing_of(model))
    try:
        return _run(load, frontends, workers, upload_streams, model)
    finally:
        load.close()


def _run(load: LoadGenerator, frontends: int, workers: int, upload_streams: int,
         model: Path) -> list[str]:
    rows = []
    with LiveServer(TF_MODEL_PATH=str(model), MAX_STREAMS="512", MAX_CONNECTIONS="2000",
                    FRONTEND_PROCESSES=str(frontends), NUM_PROCESSES=str(workers)) as server:
        url = f"ws://127.0.0.1:{server.port}/enhance/stream"
        load.run(url, 2 * frontends)  # warm up
        by_count = {}
        for count in (1, 16, 64):
            before = service_cpu_seconds(server.process.pid)
            p50, p99 = latency(load.run(url, count))
            cpu, in_workers = np.subtract(service_cpu_seconds(server.process.pid), before)
            by_count[count] = (p50, p99)
            rows.append(f"| {count} real-time streams | {p50:.2f} ms | {p99:.2f} ms |")
            print(rows[-1], file=sys.stderr)
            if count == 16:  # light enough to keep up: what one stream costs the service
                cores_per_stream = cpu / (count * SECONDS)
                rows.append(f"| CPU of the service (API process and workers) per real-time "
                            f"stream, at 16 streams | {cores_per_stream:.3f} cores (workers "
                            f"{in_workers / (count * SECONDS):.3f}) | 64 streams: "
                            f"{64 * cores_per_stream:.1f} cores |")
        most = 0
        for count in TRIED:
            try:
                p50, p99 = latency(load.run(url, count))
            except StreamError as exc:  # overloaded: the load generator itself falls behind
                print(f"{count} streams: {exc}", file=sys.stderr)
                break
            print(f"{count} streams: p50 {p50:.2f} p99 {p99:.2f}", file=sys.stderr)
            if p99 > TARGET_P99_MS:
                break
            most = count
        rows.append(f"| most real-time streams with p99 ≤ {TARGET_P99_MS:g} ms (tried "
                    f"{', '.join(map(str, TRIED[:TRIED.index(count) + 1]))}) | {most} | "
                    f"target ≥ 64 |")

        # Streams alone, then while a 10-minute file is posted to /enhance and enhanced:
        # three pairs, as shared cores make single runs noisy.
        alone, busy, whole, seconds = [], [], [], []
        for _ in range(UPLOAD_REPEATS):
            alone.append(latency(load.run(url, upload_streams))[1])
            per_stream, marks = streams_with_upload(server, url, load, upload_streams)
            busy.append(latency(per_stream, (marks["sent"], marks["done"]))[1])
            whole.append(latency(per_stream)[1])
            seconds.append(marks["done"] - marks["sent"])
        ratios = [b / a for a, b in zip(alone, busy, strict=True)]
        listed = lambda values: " / ".join(f"{v:.1f}" for v in values)  # noqa: E731
        rows.append(f"| {upload_streams} streams alone, then while a 10-minute file is "
                    f"enhanced (the chunks sent from its last byte to its answer, "
                    f"{listed(seconds)} s), "
                    f"{UPLOAD_REPEATS} runs | | alone {listed(alone)} ms; with the file "
                    f"{listed(busy)} ms: {listed(ratios)}×, median "
                    f"{statistics.median(ratios):.2f}× (target ≤ 1.5×) |")
        rows.append(f"| the same runs, every chunk (the upload's 115 MB coming in as well) | | "
                    f"{listed(whole)} ms |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frontends", type=int, default=1, help="FRONTEND_PROCESSES")
    parser.add_argument("--workers", type=int, default=2, help="NUM_PROCESSES, in all")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--upload-streams", type=int, default=16,
                        help="streams running while the 10-minute file is enhanced")
    parser.add_argument("--model", choices=sorted(MODELS), default="denoiser",
                        help="passthrough: what the service costs without a model's")
    parser.add_argument("--out", type=Path, help="write here instead of bench/stream_results.md")
    args = parser.parse_args()
    if args.model != "denoiser" and args.out is None:
        parser.error("--model other than the denoiser needs --out (the docs' figures are "
                     "the denoiser's)")
    frame, hop, delay = framing_of(MODELS[args.model])
    rows = run(args.frontends, args.workers, args.clients, args.upload_streams,
               MODELS[args.model])
    table = "| case | p50 | p99 |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    command = " ".join(["python -m bench.stream_bench", *sys.argv[1:]])
    out = args.out or RESULTS
    out.write_text(
        f"# Live streams (`{command}`)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; server `python main.py`, "
        f"{MODELS[args.model].stem}, "
        f"{args.frontends} front-end process(es), {args.workers} workers in all, "
        f"{args.clients} load-generator process(es); "
        f"48 kHz mono, 10 ms chunks sent in real time, {SECONDS:g} s per stream. Added "
        "latency, measured by the client: from sending a chunk that completes a frame to "
        "receiving the samples that frame makes ready, on top of the framing's own "
        f"{(frame - hop + delay) / RATE * 1000:.1f}-{(frame + delay) / RATE * 1000:.1f} ms "
        "(the model's look-ahead included; p50 and p99 over "
        "the chunks of all streams).\n\n" + table)
    update_for(out)  # the docs page that shows this file, if one does
    print(out.read_text())


if __name__ == "__main__":
    main()

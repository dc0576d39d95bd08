"""A long job beside live streams and /enhance: does it add latency to either?

A ``python main.py`` with the denoiser and 2 workers. First alone: real-time streams' p99
added latency (measured by the client, as ``bench.stream_bench`` does) and the time of a
``POST /enhance`` of a 5 s clip (the median of 5). Then the same while a job of three hours
of 48 kHz speech runs (``POST /jobs``, posted and started before the measurements; the
denoiser runs it at over 100x real time, so an hour would end before five runs do): its blocks go
at the lowest priority (``Priority.JOB``), so the targets are a p99 within 1.5x of alone and
a 5 s clip's time within 1.5x of alone. The job's own progress is reported too.

Run: ``python -m bench.jobs_bench`` (``make bench-jobs``, which first runs the 2-hour job
test); writes ``bench/jobs_results.md``, which ``docs/benchmarks.md`` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.docs_sections import update_for
from bench.stream_bench import RATE, framing_of, latency, speech, streams
from tests.helpers import DENOISER, ROOT, LiveServer

RESULTS = ROOT / "bench" / "jobs_results.md"
TARGET_RATIO = 1.5
CLIP_REPEATS = 5


def clip_seconds(url: str, clip: bytes) -> float:
    """The median time of ``POST /enhance`` of the clip, s."""
    times = []
    for _ in range(CLIP_REPEATS):
        started = time.monotonic()
        answer = httpx.post(f"{url}/enhance?sample_rate={RATE}&format=s16le", content=clip,
                            headers={"Content-Type": "application/octet-stream"}, timeout=120)
        assert answer.status_code == 200, answer.text
        times.append(time.monotonic() - started)
    return statistics.median(times)


def stream_p99(url: str, count: int, seconds: float) -> float:
    audio = speech(seconds)
    ws = url.replace("http://", "ws://") + "/enhance/stream"
    per_stream = asyncio.run(streams(ws, count, audio, framing_of(DENOISER)))
    return latency(per_stream)[1]


def start_job(url: str, hours: float, folder: Path) -> str:
    """Post ``hours`` of speech as a job; return its id once it runs."""
    path = folder / "long.s16"
    with path.open("wb") as f:
        for _ in range(int(hours * 60)):
            f.write((speech(60.0) * 32767).astype("<i2").tobytes())
    with path.open("rb") as f:
        answer = httpx.post(f"{url}/jobs?sample_rate={RATE}&format=s16le", content=f,
                            headers={"Content-Type": "application/octet-stream"}, timeout=600)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    while httpx.get(f"{url}/jobs/{job_id}").json()["status"] == "queued":
        time.sleep(0.1)
    return job_id


def measure(url: str, clip: bytes, streams_count: int, seconds: float,
            repeats: int) -> tuple[list[float], list[float]]:
    """Streams' p99s (ms) and 5 s clips' median times (s), ``repeats`` runs of each."""
    p99s, clips = [], []
    for _ in range(repeats):
        p99s.append(stream_p99(url, streams_count, seconds))
        clips.append(clip_seconds(url, clip))
    return p99s, clips


def run(streams_count: int, seconds: float, hours: float, repeats: int) -> dict:
    clip = (speech(5.0) * 32767).astype("<i2").tobytes()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder, \
            LiveServer(JOBS_DIR=folder, TF_MODEL_PATH=str(DENOISER)) as server:
        stream_p99(server.url, 2, 1.0)  # warm up
        alone = measure(server.url, clip, streams_count, seconds, repeats)
        job_id = start_job(server.url, hours, Path(folder))
        before = httpx.get(f"{server.url}/jobs/{job_id}").json()["progress"]
        beside = measure(server.url, clip, streams_count, seconds, repeats)
        job = httpx.get(f"{server.url}/jobs/{job_id}").json()
        assert job["status"] == "running", f"the job ended before the measurements did: {job}"
    return {"alone": alone, "beside": beside, "job_progress": job["progress"] - before,
            "load": load}


def _ratios(alone: list[float], beside: list[float]) -> str:
    ratios = [b / a for a, b in zip(alone, beside, strict=True)]
    return (" / ".join(f"{r:.2f}" for r in ratios)
            + f", median {statistics.median(ratios):.2f}x")


def report(figures: dict, streams_count: int, seconds: float, hours: float) -> str:
    (p99_alone, clip_alone), (p99_beside, clip_beside) = figures["alone"], figures["beside"]
    runs = len(p99_alone)
    return "\n".join([
        "# A long job beside live streams and /enhance",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores (load average {figures['load']:.1f} "
        f"when it started); the denoiser on 2 workers; {runs} runs each of {streams_count} "
        f"real-time streams of {seconds:g} s and of 5 POSTs of a 5 s clip, alone, then while "
        f"a job of {hours:g} h of 48 kHz speech runs (it advanced "
        f"{figures['job_progress']:.0%} meanwhile). Run: `python -m bench.jobs_bench`.",
        "",
        "| | alone | with the job | ratio (target <= 1.5x) |",
        "|---|---|---|---|",
        f"| streams' p99 added latency, ms | {' / '.join(f'{v:.1f}' for v in p99_alone)} | "
        f"{' / '.join(f'{v:.1f}' for v in p99_beside)} | {_ratios(p99_alone, p99_beside)} |",
        f"| POST /enhance of a 5 s clip, median of 5, ms | "
        f"{' / '.join(f'{v * 1000:.0f}' for v in clip_alone)} | "
        f"{' / '.join(f'{v * 1000:.0f}' for v in clip_beside)} | "
        f"{_ratios(clip_alone, clip_beside)} |",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    figures = run(args.streams, args.seconds, args.hours, args.repeats)
    text = report(figures, args.streams, args.seconds, args.hours)
    args.out.write_text(text)
    if args.out == RESULTS:
        update_for(RESULTS)
    print(text)


if __name__ == "__main__":
    main()

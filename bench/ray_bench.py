"""The Ray Serve backend against the local pool, in one run: ``python -m bench.ray_bench``.

On a fresh local Ray instance (``ray.init(address="local")``, one CPU per replica):

- the heavy model (``bench/heavy_model.py``, about 0.7 ms a frame): 2 replicas vs 1 on the
  25.8 s recording (target ≥ 1.7×);
- latency of the 25.8 s recording on Ray (2 replicas) vs the local pool (2 workers) for the
  passthrough (pure overhead), the denoiser and the heavy model, and of one frame (the cost
  of one call);
- memory (PSS) each backend adds to the API process: its workers, or the Ray head (GCS,
  raylet, Serve controller, agents), the replicas and Ray's share of this process.

Needs ``requirements-ray.txt`` (``make bench-ray`` installs it) and, for the heavy model,
TensorFlow (``requirements-dev.txt``). Writes ``bench/ray_results.md``; the README quotes it.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.run_all import median_time
from enhancer import AudioEnhancer
from tests.helpers import DENOISER, PASSTHROUGH, ROOT, children_of

HEAVY = ROOT / "bench" / "heavy_model.tflite"
RECORDING = ROOT / "audio_samples" / "speech_48000.wav"
RESULTS = ROOT / "bench" / "ray_results.md"
TARGET_SPEED_UP = 1.7


def pss_mb(pids: list[int]) -> float:
    """Proportional set size of ``pids`` together (shared pages counted once), MB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total / 1024


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = children_of(todo.pop())
        found += children
        todo += children
    return found


def time_enhancer(enhancer: AudioEnhancer, audio: np.ndarray, repeats: int) -> float:
    return median_time(lambda: enhancer.enhance_audio(audio), repeats, warmup=2)


@dataclass
class RayFigures:
    """What the Ray Serve backend measured: times by model, start-up and memory."""

    times: dict[str, float]
    startup: dict[int, float]  # deploying the application, by replicas
    ray_start: float  # starting Ray itself
    ray_pss: float  # the Ray head's processes and the replicas
    driver_pss: float  # Ray's share of this process
    replica_pss: float  # one replica
    version: str


def main() -> None:
    started = time.monotonic()
    audio, rate = sf.read(RECORDING, dtype="float32")
    assert rate == 48000 and audio.ndim == 1
    if not HEAVY.exists():  # TensorFlow in a child process: it would swell this one's memory
        subprocess.run([sys.executable, "-m", "bench.heavy_model", str(HEAVY)], cwd=ROOT,
                       check=True, capture_output=True)
    models = {"passthrough": (PASSTHROUGH, 20), "denoiser": (DENOISER, 20), "heavy": (HEAVY, 5)}
    local, local_pss = measure_local(models, audio)
    on_ray = measure_on_ray(models, audio)
    speed_up = on_ray.times["heavy x1"] / on_ray.times["heavy x2"]
    report = "\n".join(report_lines(local, local_pss, on_ray, audio.shape[0] / rate, speed_up,
                                    time.monotonic() - started)) + "\n"
    RESULTS.write_text(report)
    print(report)
    if speed_up < TARGET_SPEED_UP:
        sys.exit(f"2 replicas over 1: {speed_up:.2f}×, target {TARGET_SPEED_UP}×")


def measure_local(models: dict[str, tuple[Path, int]],
                  audio: np.ndarray) -> tuple[dict[str, float], float]:
    """Each model's time on the local pool (2 workers), one frame's with the denoiser, and
    the denoiser's workers' memory (PSS, MB)."""
    local: dict[str, float] = {}
    for name, (path, repeats) in models.items():
        with AudioEnhancer(path, num_processes=2) as enhancer:
            local[name] = time_enhancer(enhancer, audio, repeats)
            if name == "denoiser":
                local["one frame"] = time_enhancer(enhancer, audio[:1024].copy(), 50)
                local_pss = pss_mb(enhancer.worker_pids)
    return local, local_pss


def measure_on_ray(models: dict[str, tuple[Path, int]], audio: np.ndarray) -> RayFigures:
    """The heavy model on 1 and 2 replicas, the others (and one frame) on 2, on a fresh
    local Ray instance; what Ray adds to memory."""
    before_ray = pss_mb([os.getpid()])

    import ray

    from enhancer.backends.ray.backend import RayOptions

    begun = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    ray_start = time.perf_counter() - begun
    try:
        on_ray: dict[str, float] = {}
        startup: dict[int, float] = {}
        for replicas in (1, 2):
            begun = time.perf_counter()
            with AudioEnhancer(HEAVY, backend="ray",
                               ray_options=RayOptions(replicas=replicas)) as enhancer:
                startup[replicas] = time.perf_counter() - begun
                on_ray[f"heavy x{replicas}"] = time_enhancer(enhancer, audio, 5)
        for name in ("passthrough", "denoiser"):
            path, repeats = models[name]
            with AudioEnhancer(path, backend="ray", ray_options=RayOptions(replicas=2)) as e:
                on_ray[name] = time_enhancer(e, audio, repeats)
                if name == "denoiser":
                    on_ray["one frame"] = time_enhancer(e, audio[:1024].copy(), 50)
                    ray_pss = pss_mb(descendants(os.getpid()))
                    driver_pss = pss_mb([os.getpid()]) - before_ray
                    replica_pss = pss_mb(e.worker_pids) / max(1, len(e.worker_pids))
    finally:
        ray.shutdown()
    on_ray["heavy"] = on_ray["heavy x2"]
    return RayFigures(on_ray, startup, ray_start, ray_pss, driver_pss, replica_pss,
                      ray.__version__)


def report_lines(local: dict[str, float], local_pss: float, on_ray: RayFigures,
                 seconds: float, speed_up: float, took: float) -> list[str]:
    """bench/ray_results.md, line by line."""
    ray_times = on_ray.times
    lines = [
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, Ray {on_ray.version}. "
        f"Run {time.strftime('%Y-%m-%d')} by `python -m bench.ray_bench` in {took:.0f} s.",
        "",
        f"Heavy model, {seconds:.1f} s of 48 kHz audio: 1 replica "
        f"{ray_times['heavy x1']:.3f} s, 2 replicas {ray_times['heavy x2']:.3f} s: "
        f"**{speed_up:.2f}×** (target ≥ {TARGET_SPEED_UP}×: "
        f"{'met' if speed_up >= TARGET_SPEED_UP else 'not met'}).",
        "",
        f"| {seconds:.1f} s of audio, enhance_audio | local pool, 2 workers | "
        f"Ray Serve, 2 replicas | Ray − local |",
        "|---|---|---|---|",
    ]
    for name in ("passthrough", "denoiser", "heavy", "one frame"):
        label = "one frame (1024 samples), denoiser" if name == "one frame" else name
        lines.append(f"| {label} | {local[name] * 1000:.1f} ms | "
                     f"{ray_times[name] * 1000:.1f} ms | "
                     f"{(ray_times[name] - local[name]) * 1000:+.1f} ms |")
    ray_pss, driver_pss = on_ray.ray_pss, on_ray.driver_pss
    return [*lines, "",
            f"Memory added to the API process (PSS, denoiser served): local pool "
            f"{local_pss:.0f} MB (2 workers); Ray {ray_pss + driver_pss:.0f} MB (the Ray "
            f"head's processes and 2 replicas of {on_ray.replica_pss:.0f} MB each: "
            f"{ray_pss:.0f} MB; Ray in the API process: {driver_pss:.0f} MB). Deploying the "
            f"application: {on_ray.startup[1]:.1f} s (1 replica), {on_ray.startup[2]:.1f} s "
            f"(2); starting Ray itself: {on_ray.ray_start:.1f} s."]


if __name__ == "__main__":
    main()

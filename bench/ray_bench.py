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


def main() -> None:
    started = time.monotonic()
    audio, rate = sf.read(RECORDING, dtype="float32")
    assert rate == 48000 and audio.ndim == 1
    one_frame = audio[:1024].copy()
    seconds = audio.shape[0] / rate
    if not HEAVY.exists():  # TensorFlow in a child process: it would swell this one's memory
        subprocess.run([sys.executable, "-m", "bench.heavy_model", str(HEAVY)], cwd=ROOT,
                       check=True, capture_output=True)
    models = {"passthrough": (PASSTHROUGH, 20), "denoiser": (DENOISER, 20), "heavy": (HEAVY, 5)}

    local: dict[str, float] = {}
    for name, (path, repeats) in models.items():
        with AudioEnhancer(path, num_processes=2) as enhancer:
            local[name] = time_enhancer(enhancer, audio, repeats)
            if name == "denoiser":
                local["one frame"] = time_enhancer(enhancer, one_frame, 50)
                local_pss = pss_mb(enhancer.worker_pids)
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
                    on_ray["one frame"] = time_enhancer(e, one_frame, 50)
                    ray_pss = pss_mb(descendants(os.getpid()))
                    driver_pss = pss_mb([os.getpid()]) - before_ray
                    replica_pss = pss_mb(e.worker_pids) / max(1, len(e.worker_pids))
    finally:
        ray.shutdown()
    on_ray["heavy"] = on_ray["heavy x2"]
    speed_up = on_ray["heavy x1"] / on_ray["heavy x2"]

    lines = [
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, Ray {ray.__version__}. "
        f"Run {time.strftime('%Y-%m-%d')} by `python -m bench.ray_bench` in "
        f"{time.monotonic() - started:.0f} s.",
        "",
        f"Heavy model, {seconds:.1f} s of 48 kHz audio: 1 replica {on_ray['heavy x1']:.3f} s, "
        f"2 replicas {on_ray['heavy x2']:.3f} s: **{speed_up:.2f}×** "
        f"(target ≥ {TARGET_SPEED_UP}×: {'met' if speed_up >= TARGET_SPEED_UP else 'not met'}).",
        "",
        f"| {seconds:.1f} s of audio, enhance_audio | local pool, 2 workers | "
        f"Ray Serve, 2 replicas | Ray − local |",
        "|---|---|---|---|",
    ]
    for name in ("passthrough", "denoiser", "heavy", "one frame"):
        label = "one frame (1024 samples), denoiser" if name == "one frame" else name
        lines.append(f"| {label} | {local[name] * 1000:.1f} ms | {on_ray[name] * 1000:.1f} ms | "
                     f"{(on_ray[name] - local[name]) * 1000:+.1f} ms |")
    lines += [
        "",
        f"Memory added to the API process (PSS, denoiser served): local pool {local_pss:.0f} MB "
        f"(2 workers); Ray {ray_pss + driver_pss:.0f} MB (the Ray head's processes and 2 "
        f"replicas of {replica_pss:.0f} MB each: {ray_pss:.0f} MB; Ray in the API process: "
        f"{driver_pss:.0f} MB). Deploying the application: {startup[1]:.1f} s (1 replica), "
        f"{startup[2]:.1f} s (2); starting Ray itself: {ray_start:.1f} s.",
    ]
    report = "\n".join(lines) + "\n"
    RESULTS.write_text(report)
    print(report)
    if speed_up < TARGET_SPEED_UP:
        sys.exit(f"2 replicas over 1: {speed_up:.2f}×, target {TARGET_SPEED_UP}×")


if __name__ == "__main__":
    main()

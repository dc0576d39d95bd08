"""How the pool scales with workers: throughput at 1, 2, 4, … workers up to the cores.

One long recording (60 s at 48 kHz) through the heavy benchmark model and through the shipped
denoiser, each with 1, 2, 4, 8 and 16 workers (those the machine's cores allow); speed-up is
against 1 worker in the same run. Needs more cores than this project's 2-core machine to say
much: ``python -m bench.scaling`` on a bigger machine writes ``bench/scaling.md``.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

from enhancer import AudioEnhancer
from enhancer.paths import DENOISER_MODEL, PROJECT_DIR

HEAVY = PROJECT_DIR / "bench" / "heavy_model.tflite"
RESULTS = PROJECT_DIR / "bench" / "scaling.md"
SECONDS = 60


def best_time(function, repeats: int = 3) -> float:
    function()  # warm-up: first-call allocations
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> str:
    cores = os.cpu_count() or 1
    audio = (np.random.default_rng(1).standard_normal(SECONDS * 48000) * 0.1).astype(np.float32)
    counts = [w for w in (1, 2, 4, 8, 16, 32) if w <= cores]
    lines = [f"Machine: {cores} cores, {platform.processor() or platform.machine()}, Python "
             f"{sys.version.split()[0]}. {SECONDS} s of 48 kHz audio per request, best of 3. "
             f"Command: `python -m bench.scaling`.", "",
             "| model | workers | × real time | speed-up over 1 worker | efficiency |",
             "|---|---|---|---|---|"]
    for model in (HEAVY, DENOISER_MODEL):
        one = None
        for workers in counts:
            with AudioEnhancer(model, num_processes=workers) as pool:
                elapsed = best_time(lambda p=pool: p.enhance_audio(audio))
            one = one or elapsed
            lines.append(f"| {model.stem} | {workers} | {SECONDS / elapsed:.0f}× | "
                         f"{one / elapsed:.2f}× | {one / elapsed / workers:.0%} |")
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    table = main()
    RESULTS.write_text("# Pool scaling with workers\n\n" + table)
    print(table)

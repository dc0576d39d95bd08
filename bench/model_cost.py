"""What one invoke of the denoiser costs: a live stream's one-frame chunk against a file's
segment, in one interpreter, one thread, best of many repeats.

A stateless model's chunk brings the frames its output needs in front of it (the card's
``context_frames``), so a chunk costs far more than its one frame does inside a long segment;
the model's stream step twin takes the chunk's one frame and the stream's state instead.
Run: ``python -m bench.model_cost`` (prints a Markdown table).
"""

from __future__ import annotations

import sys
from functools import partial

import numpy as np

from bench.scaling import best_time
from enhancer.model.card import load_card
from enhancer.model.loading import load_model_runner
from enhancer.model.runner import StreamStepRunner
from enhancer.paths import DENOISER_MODEL

STREAM_CHUNK_S = 0.010  # the stream benchmark's chunk: 10 ms


def main(model_path: str = str(DENOISER_MODEL)) -> str:
    card = load_card(model_path, 48000)
    runner = load_model_runner(model_path)
    rng = np.random.default_rng(0)
    hop = card.hop_length or runner.frame_length
    rows, per_invoke = [], {}
    for label, outputs, repeats in (("stream chunk (1 frame)", 1, 2000),
                                    ("file segment (400 frames)", 400, 50)):
        frames = (0.01 * rng.standard_normal((card.context_frames + outputs,
                                              runner.frame_length))).astype(np.float32)
        seconds = per_invoke[outputs] = best_time(partial(runner.run, frames), repeats)
        rows.append(f"| {label} | {card.context_frames + outputs} | {seconds * 1e6:.0f} µs | "
                    f"{seconds / outputs * 1e6:.0f} µs |")
    frames_per_second = card.sample_rate / hop
    step_note = ""
    if card.stream_step_path is not None:
        step = StreamStepRunner(card.stream_step_path, runner.frame_length,
                                card.stream_state_size)
        frame = (0.01 * rng.standard_normal((1, runner.frame_length))).astype(np.float32)
        state = np.zeros(card.stream_state_size, np.float32)
        seconds = per_invoke[0] = best_time(partial(step.run, frame, state), 2000)
        rows.append(f"| stream chunk (1 frame) by the stream step, its state in and out | 1 | "
                    f"{seconds * 1e6:.0f} µs | {seconds * 1e6:.0f} µs |")
        step_note = (f"; by the stream step, {frames_per_second * per_invoke[0]:.3f} cores, "
                     f"{per_invoke[1] / per_invoke[0]:.1f}× less")
    return "\n".join([
        f"Model: {card.name} (`context_frames` {card.context_frames}, hop {hop}). "
        f"Command: `python -m bench.model_cost`.", "",
        "| invoke | rows in | time | per output frame |", "|---|---|---|---|", *rows, "",
        f"A real-time stream needs {frames_per_second:.1f} frames a second: "
        f"{frames_per_second * per_invoke[1]:.3f} cores of model time as one-frame chunks "
        f"({STREAM_CHUNK_S * 1000:.0f} ms chunks are one frame each, or none){step_note}.",
    ])


if __name__ == "__main__":
    print(main(*sys.argv[1:]))

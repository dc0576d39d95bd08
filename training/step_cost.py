"""What a training step of the recurrent model costs at each width: is a wider model within
``make train``'s 90 minutes on this machine?

Run: ``python -m training.step_cost [UNITS ...]`` (prints a Markdown table). Times the model's
forward and backward pass and Adam's update on one batch of runs as ``make train`` draws them
(16 runs of ``LEAD`` + 192 frames), float32 and bfloat16, best of 10 after two warm-up steps.
The data, the spectra and the loss add about 200 ms a step at any width (``make train``'s
cycles 1-2: 59.6 minutes for 7,400 steps).
"""

from __future__ import annotations

import sys

import numpy as np

from bench.scaling import best_time
from training.denoiser_model import FEATURES
from training.recurrent_model import LEAD, UNITS
from training.train_recurrent import CYCLES, FRAMES

BATCH = 16


def step_seconds(units: int, policy: str) -> float:
    """Best time of one training step of a ``units``-wide model under the Keras ``policy``."""
    import keras
    import tensorflow as tf

    from training.recurrent_model import build_training

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_training(units)
        optimizer = keras.optimizers.Adam(1e-3)
        feats = tf.constant(np.random.default_rng(0).normal(
            size=(BATCH, LEAD + FRAMES, FEATURES)).astype(np.float32))

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                gains = tf.cast(model(x, training=True), tf.float32)
                loss = tf.reduce_mean(tf.square(gains - 0.5))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        step(feats)  # traces; best_time runs one more warm-up step
        return best_time(lambda: step(feats).numpy(), 10)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main(widths: list[int]) -> str:
    steps = sum(n for _, n in CYCLES)
    times = {units: (step_seconds(units, "float32"), step_seconds(units, "mixed_bfloat16"))
             for units in dict.fromkeys([UNITS, *widths])}
    rows = [f"| {units} | {f32 * 1000:.0f} ms | {bf16 * 1000:.0f} ms | "
            f"{f32 / times[UNITS][0]:.2f}× |" for units, (f32, bf16) in times.items()]
    return "\n".join([
        f"Training step of the model alone, batch {BATCH} × {LEAD + FRAMES} frames; "
        f"`make train` runs {steps:,} steps. Command: `python -m training.step_cost`.", "",
        "| GRU units | float32 | bfloat16 | float32 vs the shipped width |", "|---|---|---|---|",
        *rows])


if __name__ == "__main__":
    print(main([int(u) for u in sys.argv[1:]] or [UNITS, 320, 384]))

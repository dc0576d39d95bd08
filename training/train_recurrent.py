"""Train the recurrent denoiser (:mod:`training.recurrent_model`), export it, write its card.

Run: ``python -m training.train_recurrent`` (``make train``) or, to check that the code still
works, ``python -m training.train_recurrent --smoke --output /tmp/d.tflite``.

The data, the noises and the loss are :mod:`training.train`'s; the difference is what a
training example is: a run of ``LEAD + FRAMES`` consecutive frames of one mixture, the GRUs
starting from a zero state at its start, the loss counted on its last ``FRAMES``. That is
exactly a grid cell as the service runs it, so training sees what serving does.
Cycles of the learning rate (1e-3, then 3e-4 twice, each decaying to 1e-5): measured on the
tuning mixtures, the second raised every score (48 kHz SI-SDR gain +6.40 -> +6.74 dB, PESQ-WB
1.894 -> 1.922, DNSMOS OVRL 2.365 -> 2.370). The third adds music and sounds from more
packages (``real_data.MORE_NOISE_PACKAGES``: 30 music tracks and 337 sounds where there were 3
and 24), and the model kept is the mean of the weights before and after it (as in WiSE-FT:
a fine-tuned model and the one it started from average well). On the tuning mixtures (48 kHz;
before the third cycle, after it, their mean): SI-SDR gain +6.99, +7.15, +7.20 dB; PESQ-WB
1.921, 1.900, 1.919; DNSMOS OVRL 2.340, 2.379, 2.374 (music 2.06, 2.25, 2.25); 8-11 kHz of
clean speech -0.81, -1.15, -0.96 dB (high-band floor 0.3; hence 0.45 now). Starting the
third cycle's SNRs at -10 dB instead of -5 changed nothing (OVRL 2.374, PESQ-WB 1.906).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from training.denoiser_model import BANDS, BINS, FEATURES, FRAME, LOW_BINS, RATE, TOP_HZ
from training.recurrent_model import LEAD, UNITS, build_training
from training.train import DEFAULT_OUTPUT, FREQS, Framed, TrainingData, spectral_loss

FRAMES = 192  # a training run's frames after its warm-up: the service's grid cell
CYCLES = ((1e-3, 3840), (3e-4, 3560), (3e-4, 3000))  # (first learning rate, steps) of each
MORE_NOISE_CYCLE = 2  # from this cycle on: more recorded music and sounds, Adam restarted;
# the model kept is the mean of the weights before and after those cycles (see the docstring)


def runs(pool: list[Framed], batch: int, frames: int, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``batch`` random runs: features ``[batch, LEAD + frames, FEATURES]``, the noisy
    spectrum's parts ``[batch · frames, 2, BINS]`` and the targets ``[batch · frames, 3,
    BINS]`` (clean re, clean im, and the noisy energy and the first bin above the bandwidth,
    as :func:`training.train.examples` makes them)."""
    feats = np.empty((batch, frames + LEAD, FEATURES), np.float32)
    noisy = np.empty((batch, frames, BINS), np.complex64)
    clean = np.empty((batch, frames, BINS), np.complex64)
    bandwidth = np.empty((batch, frames), np.float32)
    for b in range(batch):
        item = pool[int(rng.integers(len(pool)))]
        start = int(rng.integers(0, max(item.noisy.shape[0] - frames, 0) + 1))
        feats[b] = item.features[start:start + frames + LEAD]
        noisy[b], clean[b] = item.noisy[start:start + frames], item.clean[start:start + frames]
        bandwidth[b] = item.bandwidth
    noisy, clean = noisy.reshape(-1, BINS), clean.reshape(-1, BINS)
    parts = np.stack([noisy.real, noisy.imag], axis=1)
    targets = np.zeros((batch * frames, 3, BINS), np.float32)
    targets[:, 0], targets[:, 1] = clean.real, clean.imag
    targets[:, 2, 0] = (parts ** 2).sum(axis=(1, 2))
    targets[:, 2, 1] = np.searchsorted(FREQS, bandwidth.reshape(-1), side="right")
    return feats, parts, targets


def train(output: Path, seed: int, cycles: tuple[tuple[float, int], ...], units: int,
          batch: int, pool_size: int, espeak_utterances: int, smoke: bool = False,
          resume: Path | None = None, first_cycle: int = 0) -> dict:
    """Train, export, write the card. ``resume``: weights saved after cycle ``first_cycle``
    - 1 of this recipe, to run only the cycles from ``first_cycle`` on."""
    import keras
    import tensorflow as tf

    from training.denoiser_model import erb_band_matrices

    started = time.monotonic()
    rng = np.random.default_rng(seed)
    data_set = TrainingData.load(seed, smoke, espeak_utterances, rng)

    def new_pairs(count: int) -> list[Framed]:
        return data_set.new_pairs(count, LEAD)

    model = build_training(units, seed)
    if resume is not None:
        model.load_weights(resume)
    _, spread = erb_band_matrices()
    top = (np.fft.rfftfreq(FRAME, 1 / RATE) <= TOP_HZ).astype(np.float32)
    spread_t, top_t = tf.constant(spread), tf.constant(top)

    def bin_gains(g):
        band = tf.matmul(g[:, :BANDS], spread_t)
        low = tf.concat([tf.ones_like(band[:, :1]), g[:, BANDS:],
                         tf.ones_like(band[:, LOW_BINS + 1:])], axis=1)
        return band * low * top_t

    optimizer = keras.optimizers.Adam(cycles[0][0])

    @tf.function
    def step(feats, noisy, targets):
        with tf.GradientTape() as tape:
            gains = tf.reshape(model(feats, training=True), [-1, FEATURES])
            loss = tf.reduce_mean(spectral_loss(targets, noisy * bin_gains(gains)[:, None, :]))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    pool = new_pairs(pool_size)
    prepared = time.monotonic() - started
    fresh, chunk = max(1, pool_size // 10), 10

    def next_chunk():
        """Freshen part of the pool and draw a chunk's runs (in the prefetch thread)."""
        nonlocal pool
        pool = pool[fresh:] + new_pairs(fresh)
        return [runs(pool, batch, FRAMES, rng) for _ in range(chunk)]

    steps, losses, before_more_noise = 0, [], None
    with ThreadPoolExecutor(1) as prefetch:
        upcoming = prefetch.submit(next_chunk)
        for cycle, (first_rate, cycle_steps) in enumerate(cycles):
            if cycle < first_cycle:
                continue
            for done in range(0, cycle_steps, chunk):
                examples = upcoming.result()  # (no prefetch runs now: the noises can change)
                if done == 0 and cycle == MORE_NOISE_CYCLE:
                    # New noises, and Adam's moments and step count from zero, so that a
                    # run resumed here (``--resume``) is the same as one that went through.
                    before_more_noise = model.get_weights()
                    data_set.add_more_noise(smoke)
                    for variable in optimizer.variables:
                        variable.assign(tf.zeros_like(variable))
                # Each cycle: first_rate down to 1e-5, exponentially over its steps.
                optimizer.learning_rate.assign(first_rate * (1e-5 / first_rate)
                                               ** (done / cycle_steps))
                upcoming = prefetch.submit(next_chunk)
                for feats, parts, targets in examples:
                    losses.append(float(step(feats, parts, targets)))
                steps += chunk
                if steps % 400 == 0:
                    print(f"step {steps}: loss {np.mean(losses[-100:]):.4f}, "
                          f"{(time.monotonic() - started) / 60:.1f} min", flush=True)
        upcoming.result()
    if before_more_noise is not None:
        model.set_weights([(a + b) / 2 for a, b in zip(before_more_noise, model.get_weights(),
                                                       strict=True)])
    trained = time.monotonic() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    weights = output.with_suffix(".weights.h5")
    model.save_weights(weights)  # to re-export or fine-tune
    recipe = {
        **data_set.recipe(),
        "loss": "in-band compressed-magnitude (power 0.3) error plus complex error relative "
                "to the noisy frame's energy, on each run's last frames",
        "training": f"runs of {LEAD} + {FRAMES} frames, batch {batch}; Adam, "
                    + ", then ".join(f"{n} steps from {r:g} down to 1e-5" for r, n in cycles)
                    + f" (Adam restarted and more noises from cycle {MORE_NOISE_CYCLE + 1}; "
                      f"the weights kept are the mean of those before and after it)"
                    + (f"; this run resumed from the weights after cycle {first_cycle}"
                       if resume is not None else "")
                    + f"; data {prepared / 60:.1f} min, total {trained / 60:.1f} min; final "
                      f"loss {np.mean(losses[-50:]):.4f}",
        "packages": data_set.versions,
        "seed": seed,
    }
    from training.export_recurrent import export_with_card

    return export_with_card(weights, output, units, recipe, data_set.root, seed, smoke)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="TFLite file to write; the card goes beside it (.json)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--units", type=int, default=UNITS)
    parser.add_argument("--resume", type=Path, metavar="WEIGHTS",
                        help="weights (.weights.h5) saved after cycle --first-cycle - 1")
    parser.add_argument("--first-cycle", type=int, default=0, metavar="N",
                        help="with --resume: run the cycles from N (0-based) on")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps on a little data: checks the code, not the model")
    return parser


if __name__ == "__main__":
    parser = build_parser()
    args = parser.parse_args()
    if args.first_cycle and args.resume is None:
        parser.error("--first-cycle needs --resume: the weights those cycles would start from")
    if args.smoke:
        result = train(args.output, args.seed, cycles=((1e-3, 10),) * (MORE_NOISE_CYCLE + 1),
                       units=16, batch=2, pool_size=8, espeak_utterances=4, smoke=True)
    else:
        result = train(args.output, args.seed, CYCLES, args.units, batch=16, pool_size=400,
                       espeak_utterances=300, resume=args.resume, first_cycle=args.first_cycle)
    print(json.dumps(result, indent=2))

"""Train the denoiser, export it as TFLite with float16 weights, and write its model card.

Run: ``python -m training.train`` (under 25 minutes on 2 cores) or, for a quick check that the
code still works, ``python -m training.train --smoke --output /tmp/d.tflite``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from enhancer.framing import sqrt_hann
from enhancer.metrics import si_sdr
from training import data
from training.denoiser_model import BANDS, FRAME, HOP, LOW_BINS, RATE, build_denoiser, export_fp16

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "models" / "denoiser_48k.tflite"


class FrameSampler:
    """Random windowed frames from a set of mixtures: (noisy frames, [clean, noisy] targets)."""

    def __init__(self, mixtures: list[data.Mixture], seed: int) -> None:
        self.noisy = np.concatenate([m.noisy for m in mixtures])
        self.clean = np.concatenate([m.clean for m in mixtures])
        self.rng = np.random.default_rng(seed)
        self.window = sqrt_hann(FRAME)

    def sample(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        starts = self.rng.integers(0, self.noisy.shape[0] - FRAME, count)
        index = starts[:, None] + np.arange(FRAME)[None, :]
        noisy = self.noisy[index] * self.window
        clean = self.clean[index] * self.window
        return noisy[..., None], np.stack([clean, noisy], axis=-1)


def relative_error(targets, enhanced):
    """Frame error relative to the noisy frame's energy: every level and SNR counts alike."""
    import tensorflow as tf

    clean, noisy = targets[..., 0], targets[..., 1]
    error = tf.reduce_sum(tf.square(enhanced[..., 0] - clean), axis=1)
    energy = tf.reduce_sum(tf.square(noisy), axis=1)
    return error / (energy + 1e-7)


def quick_scores(tflite_path: Path, seed: int, utterances: int) -> dict:
    """SI-SDR of noisy input and of the model's output on held-out voices and sentences."""
    from enhancer import AudioEnhancer

    speech = data.speech_set(utterances, seed + 1, test=True)
    rng = np.random.default_rng(seed + 2)
    rows = []
    with AudioEnhancer(tflite_path, num_processes=0) as enhancer:
        for i, utterance in enumerate(speech):
            for snr in (-5, 0, 5, 10, 15):
                kind = data.NOISE_KINDS[(i + snr) % len(data.NOISE_KINDS)]
                others = [s for j, s in enumerate(speech) if j != i]
                m = data.mix(utterance, rng, snr, kind, others, -25.0, None)
                out = enhancer.enhance_audio(m.noisy)
                rows.append((snr, si_sdr(m.noisy, m.clean), si_sdr(out, m.clean)))
    by_snr = {}
    for snr in (-5, 0, 5, 10, 15):
        picked = [(a, b) for s, a, b in rows if s == snr]
        by_snr[str(snr)] = {"noisy": round(float(np.mean([a for a, _ in picked])), 2),
                            "enhanced": round(float(np.mean([b for _, b in picked])), 2)}
    improvement = float(np.mean([b - a for _, a, b in rows]))
    return {"si_sdr_db_by_input_snr": by_snr, "si_sdr_improvement_db": round(improvement, 2),
            "held_out_utterances": utterances}


def train(output: Path, seed: int, minutes: float, max_steps: int, utterances: int,
          mixtures: int, batch: int, eval_utterances: int, hidden: int = 256) -> dict:
    import keras

    started = time.monotonic()
    speech = data.speech_set(utterances, seed)
    mixes = data.training_mixtures(speech, mixtures, seed + 1)
    sampler = FrameSampler(mixes, seed + 2)
    model = build_denoiser(hidden=hidden, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=relative_error)
    steps, losses = 0, []
    chunk = 100
    # Learning rate from 1e-3 down to 1e-5 over max_steps, exponentially.
    decay = 0.01 ** (chunk / max_steps)
    while steps < max_steps and time.monotonic() - started < minutes * 60:
        frames, targets = sampler.sample(batch * chunk)
        history = model.fit(frames, targets, batch_size=batch, epochs=1, verbose=0,
                            shuffle=False)
        steps += chunk
        losses.append(float(history.history["loss"][-1]))
        model.optimizer.learning_rate.assign(model.optimizer.learning_rate * decay)
    output.parent.mkdir(parents=True, exist_ok=True)
    export_fp16(model, output)
    recipe = {
        "speech": f"espeak-ng, {utterances} sentences, voices {data.TRAIN_VOICES} with variants "
                  f"{data.TRAIN_VARIANTS}, rate 120-220 wpm, pitch 20-80, resampled to 48 kHz",
        "noise": f"{list(data.NOISE_KINDS)}; SNR -5 to 25 dB; level -45 to -15 dBFS RMS; half "
                 f"low-passed at 3.8-20 kHz; 5 % digital silence; {mixtures} mixtures",
        "features": f"log energies in {BANDS} ERB bands + {LOW_BINS} low bins, floor 1e-5, "
                    f"mean removed",
        "model": f"MLP 56-{hidden}-{hidden}-32, sigmoid band gains on the complex spectrum; "
                 f"fp16 weights",
        "loss": "squared error of the windowed frame relative to the noisy frame's energy",
        "training": f"Adam 1e-3 decaying to 1e-5, batch {batch}, {steps} steps in "
                    f"{(time.monotonic() - started) / 60:.1f} min, final loss "
                    f"{np.mean(losses[-5:]):.4f}",
        "seed": seed,
    }
    card = {"name": output.stem, "sample_rate": RATE, "frame_length": FRAME,
            "hop_length": HOP, "window": "sqrt-hann",
            "description": "Speech denoiser: per-frame spectral mask (stateless MLP on ERB "
                           "band energies), 48 kHz, 1024-sample frames, 50 % overlap.",
            "recipe": recipe}
    output.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    card["scores"] = quick_scores(output, seed + 100, eval_utterances)
    output.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="TFLite file to write; the card goes beside it (.json)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=40000, help="most training steps")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps on a little data: checks the code, not the model")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    if args.smoke:
        result = train(args.output, args.seed, minutes=1, max_steps=100, utterances=6,
                       mixtures=6, batch=32, eval_utterances=1)
    else:
        result = train(args.output, args.seed, args.minutes, args.steps, utterances=800,
                       mixtures=2400, batch=256, eval_utterances=6, hidden=384)
    print(json.dumps(result, indent=2))

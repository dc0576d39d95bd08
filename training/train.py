"""Train the denoiser, export it as TFLite with float16 weights, and write its model card.

Run: ``python -m training.train`` (``make train``: fetches the Debian speech and noise packages
once, then trains for ``--minutes``) or, to check that the code still works,
``python -m training.train --smoke --output /tmp/d.tflite``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enhancer.model.framing import Framing
from training import data, mixing, real_data
from training.denoiser_model import (
    BANDS,
    BINS,
    CONTEXT,
    FEATURES,
    FRAME,
    HOLD,
    HOP,
    LOW_BINS,
    RATE,
    RELEASE,
    SPARSE,
    TOP_HZ,
    build_models,
    context_frames,
    export_fp16,
    frame_features,
    lookback,
    stream_state_size,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "models" / "denoiser_48k.tflite"
FREQS = np.fft.rfftfreq(FRAME, 1 / RATE)


@dataclass
class Framed:
    """One pair as the model sees it: per-frame features and the noisy and clean spectra."""

    features: np.ndarray  # [frames + context, FEATURES], silence's in front
    noisy: np.ndarray  # [frames, BINS] complex64
    clean: np.ndarray
    bandwidth: float


@dataclass
class TrainingData:
    """What training mixes: real speech from the Debian packages, espeak-ng sentences, other
    talkers for babble, recorded music and event sounds (see :meth:`load`)."""

    versions: dict[str, str]  # the packages, by name
    root: Path  # where they are unpacked
    clips: list[real_data.Clip]
    synthetic: list[mixing.Piece]
    music: list[np.ndarray]
    events: list[np.ndarray]
    espeak_utterances: int
    rng: np.random.Generator
    more_noise: bool = False  # whether music and events draw on MORE_NOISE_PACKAGES too

    @classmethod
    def load(cls, seed: int, smoke: bool, espeak_utterances: int,
             rng: np.random.Generator) -> TrainingData:
        """Fetch the packages (a few small ones for a smoke run) and read what they hold."""
        versions = real_data.fetch(packages=real_data.SMOKE_PACKAGES if smoke
                                   else real_data.PACKAGES)
        root = real_data.DEFAULT_CACHE / "root"
        clips = real_data.speech_clips(root, held_out=False,
                                       limit_seconds=60 if smoke else None, seed=seed)
        synthetic = [mixing.Piece(s, real_data.measured_bandwidth(s, 22050))
                     for s in data.speech_set(espeak_utterances, seed)]
        music, events = real_data.music_and_events(real_data.noise_clips(root, held_out=False))
        return cls(versions, root, clips, synthetic, music, events, espeak_utterances, rng)

    def add_more_noise(self, smoke: bool) -> None:
        """From here on, mixtures draw their music and event sounds from
        ``real_data.MORE_NOISE_PACKAGES`` as well (a smoke run fetches nothing more)."""
        if not smoke:
            self.versions.update(real_data.fetch(packages=real_data.MORE_NOISE_PACKAGES))
        self.music, self.events = real_data.music_and_events(
            real_data.noise_clips(self.root, held_out=False, more=True))
        self.more_noise = True

    def new_pairs(self, count: int, lead: int) -> list[Framed]:
        """``count`` fresh mixtures, framed with ``lead`` frames of silence's features in
        front. Full-band speech is scarce (most clips stop below 16 kHz): a third of the
        pieces come from it, so the top bands learn what speech is there; a quarter are
        espeak-ng."""
        rng = self.rng
        full_band = [c for c in self.clips if c.bandwidth >= 16000] or self.clips
        wide = count // 3
        real = (mixing.pieces_from_clips(full_band, 3.0, rng, wide)
                + mixing.pieces_from_clips(self.clips, 3.0, rng, count - count // 4 - wide))
        fake = [self.synthetic[int(rng.integers(len(self.synthetic)))]
                for _ in range(count // 4)]
        pairs = mixing.training_pairs(real + fake, count, rng, [c.audio for c in self.clips],
                                      self.music, self.events)
        return [framed(p, lead, int(rng.integers(HOP))) for p in pairs]

    def recipe(self, mask_bandwidth: bool = True) -> dict:
        """The model card's account of the speech and the noises."""
        seconds = {g: 0.0 for g in ("ktuberling", "klettres", "asterisk")}
        for c in self.clips:
            seconds[c.group.split("/")[0]] += c.audio.shape[0] / RATE
        return {
            "speech": {
                "real": f"Debian packages (recipe.packages): {len(self.clips)} curated clips, "
                        f"{len({c.group for c in self.clips})} languages/speakers, minutes by "
                        f"source { {k: round(v / 60, 1) for k, v in seconds.items()} }; held "
                        f"out: {real_data.HELD_OUT}",
                "synthetic": f"espeak-ng, {self.espeak_utterances} sentences, voices "
                             f"{data.TRAIN_VOICES} with variants, a quarter of the pieces",
                "bandwidth": "measured per clip (60 dB below the peak band); a third of the "
                             "pieces from clips reaching 16 kHz or more"
                             + ("; the loss ignores bins above it" if mask_bandwidth else ""),
            },
            "noise": f"{list(mixing.KINDS)}; recorded: music on hold "
                     "(asterisk-moh-opsound-wav) and event sounds (sound-theme-freedesktop)"
                     + (f", in the last cycle also {real_data.MORE_NOISE_PACKAGES} "
                        f"({len(self.music)} music tracks, {len(self.events)} sounds)"
                        if self.more_noise else "")
                     + "; SNR -5 to 20 dB, 15 % clean; level -45 to -15 dBFS RMS; a quarter "
                     "low-passed at 3.8-20 kHz; 3 % digital silence",
        }


def framed(pair: mixing.Pair, context: int, shift: int) -> Framed:
    """Frame ``pair`` as the pipeline does (``frame - hop`` zeros of lead-in), moved by
    ``shift`` samples so frames fall anywhere in the audio."""
    framing = Framing(FRAME, HOP, "sqrt-hann")
    noisy = np.fft.rfft(framing.split(pair.noisy[shift:]).block(0, 1 << 30), axis=1)
    clean = np.fft.rfft(framing.split(pair.clean[shift:]).block(0, 1 << 30), axis=1)
    silence = frame_features(np.zeros((context, BINS), np.float32),
                             np.zeros((context, BINS), np.float32))
    feats = np.concatenate([silence, frame_features(noisy.real, noisy.imag)])
    return Framed(feats, noisy.astype(np.complex64), clean.astype(np.complex64), pair.bandwidth)


def examples(pool: list[Framed], count: int, rng: np.random.Generator,
             offsets: list[int], mask_bandwidth: bool = False
             ) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` random frames: ([stacked features of each frame and its past, its noisy
    spectrum], ``[n, 3, BINS]`` targets: clean re, clean im, and the noisy energy and the
    first bin above the bandwidth)."""
    per_pair = rng.multinomial(count, np.full(len(pool), 1 / len(pool)))
    rows = offsets[0] - np.asarray(offsets)  # in the features, which have silence in front
    stacked = np.empty((count, len(offsets) * FEATURES), np.float32)
    noisy = np.empty((count, BINS), np.complex64)
    clean = np.empty((count, BINS), np.complex64)
    bandwidth = np.empty(count, np.float32)
    at = 0
    for item, n in zip(pool, per_pair, strict=True):
        if not n:
            continue
        t = rng.integers(0, item.noisy.shape[0], n)
        stacked[at:at + n] = item.features[t[:, None] + rows].reshape(n, -1)
        noisy[at:at + n], clean[at:at + n] = item.noisy[t], item.clean[t]
        bandwidth[at:at + n] = item.bandwidth
        at += n
    noisy_parts = np.stack([noisy.real, noisy.imag], axis=1)
    # Row 2 carries what the loss needs besides the clean spectrum: the noisy frame's
    # energy and the first bin above the bandwidth.
    targets = np.zeros((count, 3, BINS), np.float32)
    targets[:, 0], targets[:, 1] = clean.real, clean.imag
    targets[:, 2, 0] = (noisy_parts ** 2).sum(axis=(1, 2))
    targets[:, 2, 1] = (np.searchsorted(FREQS, bandwidth, side="right") if mask_bandwidth
                        else BINS)
    return [stacked, noisy_parts], targets


def spectral_loss(targets, estimate):
    """In-band loss, level-invariant: compressed magnitudes plus the complex error.

    Bins above the clip's bandwidth (``targets[:, 2, 1]`` on) do not count, so band-limited speech
    does not teach the model that high frequencies are noise; the compressed magnitudes give
    the quiet high bands of full-band speech their say.
    """
    import tensorflow as tf

    clean_re, clean_im = targets[:, 0], targets[:, 1]
    energy, cutoff = targets[:, 2, :1], targets[:, 2, 1]
    mask = tf.sequence_mask(tf.cast(cutoff, tf.int32), BINS, dtype=tf.float32)
    est_re, est_im = estimate[:, 0], estimate[:, 1]
    scale = energy / BINS + 1e-9
    mag = lambda re, im: tf.pow((re ** 2 + im ** 2) / scale + 1e-12, 0.15)  # noqa: E731
    inband = tf.reduce_sum(mask, axis=1) + 1.0
    magnitude = tf.reduce_sum(mask * tf.square(mag(est_re, est_im) - mag(clean_re, clean_im)),
                              axis=1) / inband
    complex_error = tf.reduce_sum(mask * ((est_re - clean_re) ** 2 + (est_im - clean_im) ** 2),
                                  axis=1) / (energy[:, 0] + 1e-7)
    return magnitude + complex_error


def enhance_frames(run: Callable[[np.ndarray], np.ndarray], audio: np.ndarray,
                   context: int) -> np.ndarray:
    """All of ``audio`` through ``run`` (``[n, FRAME]`` windowed frames to as many) in one
    block, as the pool runs a file that fits one segment: ``context`` frames of silence in
    front, those outputs dropped, overlap-add."""
    framing = Framing(FRAME, HOP, "sqrt-hann")
    frames = framing.split(audio).block(0, 1 << 30)
    padded = np.concatenate([np.zeros((context, FRAME), np.float32), frames])
    return framing.join(run(padded)[context:], audio.shape[0])


def enhance_keras(serving, audio: np.ndarray, context: int) -> np.ndarray:
    """:func:`enhance_frames` through the Keras serving model."""
    return enhance_frames(
        lambda frames: np.asarray(serving(frames[..., None], training=False))[..., 0],
        audio, context)


def held_out_pairs(root: Path, seed: int, count: int) -> tuple[list[mixing.Pair], list]:
    """Real held-out speech (languages and speakers training never hears) in held-out
    noises, and the held-out full-band clean pieces."""
    rng = np.random.default_rng(seed)
    clips = real_data.speech_clips(root, held_out=True)
    wide = [c for c in clips if c.group.startswith("k")]
    phone = [c for c in clips if c.group.startswith("asterisk")]
    pieces = (mixing.pieces_from_clips(wide, 3.0, rng, count // 2 if wide else 0)
              + mixing.pieces_from_clips(phone, 3.0, rng, count - count // 2))
    talkers = [c.audio for c in clips]
    recorded = real_data.noise_clips(root, held_out=True)
    kinds = ("white", "pink", "babble", "events", "hum", "music")
    pairs = []
    for i, piece in enumerate(pieces):
        kind = kinds[i % len(kinds)]
        snr = (-5, 0, 5, 10, 15)[i % 5]
        n = mixing.noise(kind, piece.audio.shape[0], rng, talkers, recorded, recorded)
        pairs.append(mixing.mix(piece, n, snr, -25.0, None, kind))
    clean_wide = [p for p in mixing.pieces_from_clips(wide, 3.0, rng, 12 if wide else 0)
                  if p.bandwidth > 16000]
    return pairs, clean_wide


def evaluate(enhance: Callable[[np.ndarray], np.ndarray], pairs: list[mixing.Pair],
             clean_wide: list) -> dict:
    """The card's held-out scores of ``enhance`` (audio to enhanced audio): the SI-SDR gain
    on ``pairs`` and the change per band on the clean full-band pieces."""
    from bench.metrics import band_change_db, si_sdr

    gains = [si_sdr(enhance(p.noisy), p.clean) - si_sdr(p.noisy, p.clean) for p in pairs]
    scores: dict = {"si_sdr_gain_db": round(float(np.mean(gains)), 2)}
    if clean_wide:
        clean = np.concatenate([p.audio for p in clean_wide])
        enhanced = enhance(clean)
        scores["clean_full_band_change_db"] = {
            band: round(change, 2)
            for band, change in band_change_db(enhanced, clean, RATE).items()}
    return scores


def train(output: Path, seed: int, minutes: float, max_steps: int, espeak_utterances: int,
          batch: int, hidden: int, context: int, pool_size: int, smoke: bool = False,
          mask_bandwidth: bool = True, sparse: tuple[int, ...] = SPARSE) -> dict:
    import keras

    started = time.monotonic()
    rng = np.random.default_rng(seed)
    data_set = TrainingData.load(seed, smoke, espeak_utterances, rng)

    def new_pairs(count):
        return data_set.new_pairs(count, offsets[0])

    offsets = lookback(context, sparse)
    needed = context_frames(context, sparse)  # frames a serving block needs in front
    training, serving, stream_step = build_models(hidden=hidden, context=context, seed=seed,
                                                  sparse=sparse)
    training.compile(optimizer=keras.optimizers.Adam(1e-3), loss=spectral_loss)
    pool = new_pairs(pool_size)
    steps, losses, chunk = 0, [], 100
    prepared = time.monotonic() - started
    budget = minutes * 60 - prepared

    def progress() -> float:
        """How far training is, by steps or by time, whichever is further."""
        return max(steps / max_steps, (time.monotonic() - started - prepared) / budget)

    def next_chunk():
        """Freshen part of the pool and draw a chunk's examples (in the prefetch thread)."""
        nonlocal pool
        fresh = pool_size // 16
        pool = pool[fresh:] + new_pairs(fresh)
        return examples(pool, batch * chunk, rng, offsets, mask_bandwidth)

    with ThreadPoolExecutor(1) as prefetch:  # the next chunk is made while this one trains
        upcoming = prefetch.submit(next_chunk)
        while progress() < 1:
            inputs, targets = upcoming.result()
            upcoming = prefetch.submit(next_chunk)
            history = training.fit(inputs, targets, batch_size=batch, epochs=1, verbose=0,
                                   shuffle=False)
            steps += chunk
            losses.append(float(history.history["loss"][-1]))
            # Learning rate 1e-3 down to 1e-5, exponentially, over the steps or the time.
            training.optimizer.learning_rate.assign(1e-3 * 0.01 ** min(progress(), 1.0))
            if steps % 2000 == 0:
                print(f"step {steps}: loss {np.mean(losses[-20:]):.4f}, "
                      f"{(time.monotonic() - started) / 60:.1f} min", flush=True)
        upcoming.result()
    output.parent.mkdir(parents=True, exist_ok=True)
    export_fp16(serving, output)
    step_path = output.with_name(f"{output.stem}_stream_step.tflite")
    export_fp16(stream_step, step_path)
    serving.save_weights(output.with_suffix(".weights.h5"))  # to re-export or fine-tune
    held_pairs, clean_wide = held_out_pairs(data_set.root, seed + 100, 12 if smoke else 60)
    seen_further = (f" and those {', '.join(map(str, sorted(sparse)))} frames back"
                    if sparse else "")
    card = {
        "name": output.stem, "sample_rate": RATE, "frame_length": FRAME, "hop_length": HOP,
        "window": "sqrt-hann", "context_frames": needed,
        "stream_step": {"model": step_path.name,
                        "state_size": stream_state_size(context, sparse)},
        "description": f"Speech denoiser: spectral mask from the current and {context} past "
                       f"frames{seen_further} (stateless MLP on ERB band energies), held "
                       f"over {HOLD} frames with a release of {RELEASE} per frame, low bins "
                       f"smoothed over 3, 48 kHz, 1024-sample frames, 50 % overlap, causal.",
        "recipe": {
            **data_set.recipe(mask_bandwidth),
            "features": f"log energies in {BANDS} ERB bands + {LOW_BINS} low bins for the "
                        f"current and {context} past frames{seen_further}, floor 1e-5, mean "
                        f"removed",
            "model": f"MLP {len(offsets) * FEATURES}-{hidden}-{hidden}-{hidden}-{FEATURES}, "
                     f"sigmoid band and low-bin gains on the complex spectrum, none above "
                     f"{TOP_HZ / 1000:g} kHz; serving holds each gain at least {RELEASE}^k "
                     f"times the gain k <= {HOLD} frames back and averages each low bin's "
                     f"gain with its 2 neighbours'; fp16 weights",
            "loss": ("in-band " if mask_bandwidth else "")
                    + "compressed-magnitude (power 0.3) error plus complex error relative to "
                      "the noisy frame's energy",
            "training": f"Adam 1e-3 decaying to 1e-5, batch {batch}, {steps} steps; data "
                        f"{prepared / 60:.1f} min, total "
                        f"{(time.monotonic() - started) / 60:.1f} min; final loss "
                        f"{np.mean(losses[-5:]):.4f}",
            "packages": data_set.versions,
            "seed": seed,
        },
        "scores": {"held_out_real_speech": evaluate(
            lambda audio: enhance_keras(serving, audio, needed), held_pairs, clean_wide),
                   "held_out_mixtures": len(held_pairs)},
    }
    output.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="TFLite file to write; the card goes beside it (.json)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--minutes", type=float, default=60.0, help="training time budget (a cap)")
    parser.add_argument("--steps", type=int, default=58600,
                        help="training steps (the shipped model: 58,600 in 35 minutes)")
    parser.add_argument("--context", type=int, default=CONTEXT, help="past frames seen")
    parser.add_argument("--sparse", type=lambda text: tuple(int(n) for n in text.split(",") if n),
                        default=SPARSE, help="further past frames seen (default "
                                             f"{','.join(map(str, SPARSE))}; none: '')")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--no-mask-bandwidth", dest="mask_bandwidth", action="store_false",
                        help="let the loss count each clip's bins above its measured bandwidth "
                             "too (measured: the top bands of clean speech lose 12 dB, not 7)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps on a little data: checks the code, not the model")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    if args.smoke:
        result = train(args.output, args.seed, minutes=1, max_steps=100, espeak_utterances=4,
                       batch=32, hidden=32, context=args.context, pool_size=16, smoke=True,
                       sparse=args.sparse)
    else:
        result = train(args.output, args.seed, args.minutes, args.steps, espeak_utterances=300,
                       batch=256, hidden=args.hidden, context=args.context, pool_size=400,
                       mask_bandwidth=args.mask_bandwidth, sparse=args.sparse)
    print(json.dumps(result, indent=2))

"""The denoiser: a spectral mask from a window of past frames, only builtin TFLite ops.

Stateless with context: the gains for frame ``t`` come from frames ``t − C … t`` (``C =
CONTEXT`` frames of look-back, none ahead) and, sparsely, ``t − 16``, ``t − 32``, ``t − 48``
and ``t − 64`` (``SPARSE``: how steady each band has been over 0.7 s, which tells a steady
noise from speech), so any worker can run any block of frames as long as the block starts with
64 frames of look-back (and ``HOLD`` more, below) in front; those outputs of a block are not
used, and only the frames some gain sees are transformed. Per frame, features are
log energies in ERB-spaced bands plus the finest low bins; the stacked window is made
level-invariant by removing its mean. An MLP predicts a gain in [0, 1] per band (spread over
the bins) and one per low bin (for hum lines), applied to the complex spectrum; bins above
``TOP_HZ`` get 0. Serving holds the gains: each is at least ``RELEASE^k`` times the gain
``k <= HOLD`` frames back, so gains rise at once and fall slowly, as RNNoise's do, and each
low bin's is averaged with its neighbours'.
Streams can skip the look-back's transforms: the ``stream_step`` of :func:`build_models` is
the same model one chunk at a time, its past (the look-back's features and the held gains)
in and out as an explicit state tensor that travels with the chunk, so any worker can take
any chunk; its output equals the serving model's, bit for bit.
TFLite has a builtin RFFT but no inverse, so the inverse is built from the forward RFFT: the
masked spectrum's real part extended evenly plus its imaginary part extended oddly is one real
sequence whose RFFT holds both halves of the inverse transform.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

RATE = 48000
FRAME = 1024
HOP = 512
BINS = FRAME // 2 + 1
BANDS = 48
LOW_BINS = 40  # 47-1875 Hz: pitch harmonics and hum lines, bin by bin
FEATURES = BANDS + LOW_BINS
CONTEXT = 8
# Further past frames seen, sparsely: a view of the last 0.7 s (how steady each band has
# been) at the cost of 4 more frames' features. Measured (15,000 steps, same seed, 60 held-out
# real mixtures): +4.06 dB SI-SDR against +2.80 with the last 8 frames alone; 16 to 128 frames
# back in 7 steps: +4.01.
SPARSE = (16, 32, 48, 64)
# Gains are held, then released: a frame's gain is at least RELEASE^k times the gain of the
# frame k back, for k up to HOLD (RNNoise's release, stateless: the block brings the frames).
# Gains that drop frame to frame are what DNSMOS hears as distorted speech. Measured on the
# shipped weights (60 real mixtures of held-out speakers, not the benchmark's): DNSMOS SIG
# 2.53 -> 2.69, OVRL 2.21 -> 2.30, PESQ-WB 1.880 -> 1.897, SI-SDR gain +6.05 -> +6.08 dB,
# BAK 3.58 -> 3.52. A longer hold buys more DNSMOS (0.9 over 4 frames: OVRL 2.33) but lets
# noise through after each word: on synthetic speech (another seed than the benchmark's) the
# SI-SDR gain falls 0.41 dB, against 0.17 for this one.
RELEASE = 0.8
HOLD = 3
# Serving averages each low bin's held gain with its two neighbours' (the edges repeated):
# gains set bin by bin flicker against each other in noise, which is heard as musical noise.
# Measured on the same 60 mixtures: PESQ-WB 1.897 -> 1.908, DNSMOS SIG 2.69 -> 2.74, OVRL
# 2.297 -> 2.307, SI-SDR gain unchanged (+6.08 dB); on synthetic speech -0.08 dB. Five bins
# instead of three: PESQ 1.904; the low bins also held longer (0.9 over 6 frames): PESQ 1.910,
# OVRL 2.323, but 3 more frames of look-back for every chunk and -0.10 dB on synthetic speech.
SMOOTH_LOW = True
# Nothing above this passes: no training speech reaches it (44.1 kHz recordings end at
# 22.05 kHz), so no loss ever teaches those bins, and noise there went through untouched.
TOP_HZ = 22500.0
FLOOR = 1e-5  # smaller constants flush to 0 in fp16 and give log(0) = -inf
# Above HIGH_FROM_HZ a band's gain is at least min(1, allowed / its energy)^2, where allowed
# is HIGH_ALLOWANCE x its width in bins x the 4-8 kHz energy per bin that the gains keep: a
# band holding no more than the speech kept below could put there passes whole, and a band far
# above that (noise) is not let through. Real speech's top octaves are quiet and few training
# clips reach them, so the learnt gains cut them (clean held-out full-band speech: -1.35 dB at
# 8-11 kHz, -4.09 at 11-16, -6.98 at 16-20). Measured on the shipped weights (60 real mixtures
# of held-out speakers and 40 synthetic ones, not the benchmark's): those bands -0.68, -0.57,
# -0.45 dB; SI-SDR gain +6.97 -> +6.91 dB on real speech, +8.91 -> +8.69 on synthetic (band-
# limited voices: noise above their band goes through with them); PESQ-WB and DNSMOS unchanged
# (they hear 0-8 kHz). Tried: the floor's square root instead of its square (0.15: -0.75 dB at
# 8-11 kHz for +8.65 synthetic); 0.3-8 kHz as the reference (-0.79 dB at 8-11 kHz for +6.23 dB
# real, +7.62 synthetic); raising the top bands to the share of energy kept below (-1.28 dB at
# 16-20 kHz for +5.97 dB); an allowance falling with frequency (no better). 0.45 since the
# third training cycle, whose weights keep less of 4-8 kHz: served, clean held-out speech lost
# 0.96 dB at 8-11 kHz with 0.3 and 0.78 with 0.45, for SI-SDR gains of +7.20 and +7.18 dB on
# the tuning mixtures (0.6: 0.10 dB less lost, 0.03 dB less gained; synthetic -0.05 dB a step).
HIGH_FROM_HZ = 8000.0
REFERENCE_HZ = (4000.0, 8000.0)
HIGH_ALLOWANCE = 0.45


def erb_band_matrices(frame_length: int = FRAME, bands: int = BANDS,
                      rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """Triangular ERB-spaced bands, as two matrices.

    ``[bins, bands]`` pools power into bands; ``[bands, bins]`` spreads band gains over bins.
    The spreading matrix's columns sum to 1, so equal band gains give that gain on every bin.
    """
    freqs = np.fft.rfftfreq(frame_length, 1 / rate)
    erb = 21.4 * np.log10(1 + 0.00437 * freqs)
    centres = np.linspace(erb[1], erb[-1], bands)
    spacing = centres[1] - centres[0]
    weights = np.maximum(0, 1 - np.abs(erb[:, None] - centres[None, :]) / spacing)
    weights[0] = weights[1]
    pool = weights / weights.sum(axis=0, keepdims=True)
    spread = (weights / weights.sum(axis=1, keepdims=True)).T
    return pool.astype(np.float32), spread.astype(np.float32)


def frame_features(re: np.ndarray, im: np.ndarray) -> np.ndarray:
    """NumPy twin of the model's features (for training): ``[n, FEATURES]`` float32."""
    pool, _ = erb_band_matrices()
    power = (re * re + im * im).astype(np.float32)
    bands = np.log(power @ pool + np.float32(FLOOR))
    low = np.log(power[:, 1:LOW_BINS + 1] + np.float32(FLOOR))
    return np.concatenate([bands, low], axis=1).astype(np.float32)


def tf_features(re: Any, im: Any) -> Any:
    """TensorFlow twin of :func:`frame_features`, for the served graphs."""
    import tensorflow as tf

    pool, _ = erb_band_matrices()
    power = re * re + im * im
    bands = tf.math.log(tf.matmul(power, tf.constant(pool)) + FLOOR)
    low = tf.math.log(power[:, 1:LOW_BINS + 1] + FLOOR)
    return tf.concat([bands, low], axis=1)


def tf_bin_gains(gains: Any, smooth_low: bool = False) -> Any:
    """``[n, FEATURES]`` band and low-bin gains to ``[n, BINS]`` gains per bin: band gains
    spread over the bins, times each low bin's own (averaged with its neighbours' where
    ``smooth_low``: SMOOTH_LOW), none above ``TOP_HZ``."""
    import tensorflow as tf

    _, spread = erb_band_matrices()
    top = (np.fft.rfftfreq(FRAME, 1 / RATE) <= TOP_HZ).astype(np.float32)
    band = tf.matmul(gains[:, :BANDS], tf.constant(spread))
    low = gains[:, BANDS:]
    if smooth_low:
        edged = tf.concat([low[:, :1], low, low[:, -1:]], axis=1)
        low = (edged[:, :-2] + edged[:, 1:-1] + edged[:, 2:]) / 3
    low = tf.concat([tf.ones_like(band[:, :1]), low,
                     tf.ones_like(band[:, LOW_BINS + 1:])], axis=1)
    return band * low * tf.constant(top)


def tf_high_band_floor(gains: Any, re: Any, im: Any) -> Any:
    """``[n, BINS]`` gains with those above ``HIGH_FROM_HZ`` raised to what speech could hold
    there (see ``HIGH_ALLOWANCE``): per ERB band, from the frame's own spectrum ``re``, ``im``."""
    import tensorflow as tf

    pool, spread = erb_band_matrices()
    freqs = np.fft.rfftfreq(FRAME, 1 / RATE)
    reference = ((freqs >= REFERENCE_HZ[0]) & (freqs < REFERENCE_HZ[1])).astype(np.float32)
    high_bins = (freqs >= HIGH_FROM_HZ) & (freqs <= TOP_HZ)
    high_bands = pool[high_bins].sum(axis=0) > 0  # every band that reaches a high bin
    power = re * re + im * im
    kept_per_bin = (tf.reduce_sum(gains * gains * power * reference, axis=1, keepdims=True)
                    / float(reference.sum()))
    high_pool = pool[:, high_bands]
    band_power = tf.matmul(power, tf.constant(high_pool))
    allowed = HIGH_ALLOWANCE * kept_per_bin * tf.constant(high_pool.sum(axis=0))
    floor = tf.square(tf.minimum(1.0, allowed / (band_power + 1e-20)))
    floor = tf.matmul(floor, tf.constant(spread[high_bands])) * tf.constant(
        high_bins.astype(np.float32))
    return tf.maximum(gains, floor)


def tf_inverse(re: Any, im: Any) -> Any:
    """The inverse real FFT of ``[n, BINS]`` spectra with TFLite's builtin forward RFFT only:
    the real part extended evenly plus the imaginary part extended oddly is one real sequence
    whose RFFT holds both halves of the inverse."""
    import tensorflow as tf

    even = tf.concat([re, tf.reverse(re[:, 1:BINS - 1], axis=[1])], axis=1)
    odd = tf.concat([im, -tf.reverse(im[:, 1:BINS - 1], axis=[1])], axis=1)
    s = tf.signal.rfft(even + odd)
    real, imag = tf.math.real(s), tf.math.imag(s)
    first = real + imag
    second = tf.reverse((real - imag)[:, 1:BINS - 1], axis=[1])
    return tf.concat([first, second], axis=1) / FRAME


def lookback(context: int = CONTEXT, sparse: tuple[int, ...] = SPARSE) -> list[int]:
    """The past frames a frame's gains see, oldest first, as offsets back from it: every one
    of the last ``context``, and the ``sparse`` ones further back (a cheap longer view)."""
    return sorted({*range(context + 1), *sparse}, reverse=True)


def context_frames(context: int = CONTEXT, sparse: tuple[int, ...] = SPARSE,
                   hold: int = HOLD) -> int:
    """Frames a block needs in front of its first output: the oldest look-back of the oldest
    frame whose gain is held into it (the model card's ``context_frames``)."""
    return lookback(context, sparse)[0] + hold


def stream_state_size(context: int = CONTEXT, sparse: tuple[int, ...] = SPARSE,
                      hold: int = HOLD) -> int:
    """Floats in a stream's state: the features of the look-back's frames and the raw gains
    of the frames whose gains are held into the next: a feature row for each frame a block
    needs in front."""
    return context_frames(context, sparse, hold) * FEATURES


def build_denoiser(hidden: int = 384, context: int = CONTEXT, seed: int = 0,
                   sparse: tuple[int, ...] = SPARSE, hold: int = HOLD,
                   release: float = RELEASE, smooth_low: bool = SMOOTH_LOW):
    """The training and the serving model of :func:`build_models`."""
    models = build_models(hidden, context, seed, sparse, hold, release, smooth_low)
    return models.training, models.serving


class Models(NamedTuple):
    training: Any
    serving: Any
    stream_step: Any


def build_models(hidden: int = 384, context: int = CONTEXT, seed: int = 0,
                 sparse: tuple[int, ...] = SPARSE, hold: int = HOLD,
                 release: float = RELEASE, smooth_low: bool = SMOOTH_LOW) -> Models:
    """Three Keras models sharing one set of weights.

    ``training``: (``[batch, len(lookback(context, sparse)) · FEATURES]`` stacked features
    of a frame and the past frames it sees, ``[batch, 2, BINS]`` the frame's noisy
    spectrum) → ``[batch, 2, BINS]`` its masked spectrum. The features come from
    :func:`frame_features`, so training needs no FFT.
    ``serving``: ``[n, FRAME, 1]`` windowed consecutive frames (``n > lead``, ``lead`` from
    :func:`context_frames`) → ``[n, FRAME, 1]``: zeros for the first ``lead``, then the
    enhanced frames, their gains held over ``hold`` frames with ``release`` per frame and,
    with ``smooth_low``, each low bin's averaged with its neighbours' (the training model has
    neither: it learns each frame's and each bin's own gains).
    ``stream_step``: (``[n, FRAME, 1]`` a stream's next windowed frames, ``[1, S]`` its
    state, ``S`` from :func:`stream_state_size`) → (``[n, FRAME, 1]`` the enhanced frames,
    ``[1, S]`` the state after them). A stream starts from a zero state with ``lead`` frames
    of silence in front, as a serving block does; from then on it equals ``serving``.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    offsets = lookback(context, sparse)
    width = len(offsets) * FEATURES
    lead = context_frames(context, sparse, hold)  # frames a block needs in front

    def normalised(stacked):
        # Level invariance: a gain on the input shifts every log energy equally.
        return stacked - tf.reduce_mean(stacked, axis=1, keepdims=True)

    features, bin_gains, inverse = tf_features, tf_bin_gains, tf_inverse

    mlp = keras.Sequential([
        keras.Input(shape=(width,)),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(FEATURES, activation="sigmoid",
                           bias_initializer=keras.initializers.Constant(3.0)),
    ], name="gains")

    class TrainStep(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.mlp = mlp  # an attribute, so Keras tracks (and trains) its weights

        def call(self, inputs):
            stacked, noisy = inputs
            gains = bin_gains(self.mlp(normalised(stacked)))
            return noisy * gains[:, None, :]

    class Serve(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def call(self, frames):
            frames = tf.reshape(frames, [-1, FRAME])
            # Gains are computed for the outputs and the `hold` frames before them; frame j
            # of those sees the rows j + oldest - k, for k in offsets. The rows in front are
            # only look-back: their outputs are zeros, unused. Only the rows some gain sees
            # are transformed: 28 of a stream's one-frame chunk's 68.
            oldest = offsets[0]
            count = tf.shape(frames)[0] - oldest  # frames with gains
            seen = tf.constant([[oldest - k for k in offsets]], tf.int32)
            needed, where = tf.unique(tf.reshape(tf.range(count)[:, None] + seen, [-1]))
            s = tf.signal.rfft(tf.gather(frames, needed))
            re_all, im_all = tf.math.real(s), tf.math.imag(s)
            stacked = tf.reshape(tf.gather(features(re_all, im_all), where), [count, width])
            raw = self.mlp(normalised(stacked))
            held = raw[hold:]  # at least release^k times the gains k frames back
            for k in range(1, hold + 1):
                held = tf.maximum(held, release ** k * raw[hold - k:count - k])
            gains = bin_gains(held, smooth_low)
            current = tf.reshape(where, [count, len(offsets)])[hold:, -1]  # offset 0 is last
            out = inverse(tf.gather(re_all, current) * gains,
                          tf.gather(im_all, current) * gains)
            out = tf.concat([tf.zeros([lead, FRAME]), out], axis=0)
            return tf.reshape(out, [-1, FRAME, 1])

    class StreamStep(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def call(self, inputs):
            frames, state = inputs
            frames = tf.reshape(frames, [-1, FRAME])
            count = tf.shape(frames)[0]
            # The state: the features of the last `oldest` frames, then the raw gains of
            # the last `hold`; the same values the serving block computes from its rows.
            oldest = offsets[0]
            s = tf.signal.rfft(frames)
            re, im = tf.math.real(s), tf.math.imag(s)
            every = tf.concat([tf.reshape(state[0, :oldest * FEATURES], [oldest, FEATURES]),
                               features(re, im)], axis=0)
            seen = tf.constant([[oldest - k for k in offsets]], tf.int32)
            stacked = tf.reshape(tf.gather(every, tf.range(count)[:, None] + seen),
                                 [count, width])
            raw = tf.concat([tf.reshape(state[0, oldest * FEATURES:], [hold, FEATURES]),
                             self.mlp(normalised(stacked))], axis=0)
            held = raw[hold:]
            for k in range(1, hold + 1):
                held = tf.maximum(held, release ** k * raw[hold - k:hold - k + count])
            gains = bin_gains(held, smooth_low)
            out = inverse(re * gains, im * gains)
            after = tf.concat([tf.reshape(every[count:], [1, oldest * FEATURES]),
                               tf.reshape(raw[count:], [1, hold * FEATURES])], axis=1)
            return tf.reshape(out, [-1, FRAME, 1]), after

    stacked_in = keras.Input(shape=(width,), dtype="float32", name="features")
    noisy_in = keras.Input(shape=(2, BINS), dtype="float32", name="noisy")
    training = keras.Model([stacked_in, noisy_in], TrainStep()([stacked_in, noisy_in]),
                           name="denoiser_train")
    serve_in = keras.Input(shape=(FRAME, 1), dtype="float32", name="audio")
    serving = keras.Model(serve_in, Serve()(serve_in), name="denoiser")
    step_in = keras.Input(shape=(FRAME, 1), dtype="float32", name="audio")
    state_in = keras.Input(shape=(stream_state_size(context, sparse, hold),),
                           dtype="float32", name="state")
    stream_step = keras.Model([step_in, state_in], StreamStep()([step_in, state_in]),
                              name="denoiser_stream_step")
    return Models(training, serving, stream_step)


def export_fp16(model, tflite_path) -> bytes:
    """Convert with float16 weights and builtin ops only (no Flex); write and return the bytes."""
    import tempfile
    from pathlib import Path

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved_model:
        model.export(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        data = converter.convert()
    Path(tflite_path).write_bytes(data)
    return data

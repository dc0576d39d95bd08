"""The denoiser: a stateless per-frame spectral mask, built only from builtin TFLite ops.

One windowed frame in, one frame out. Features are log energies in ERB-spaced bands plus the
finest low-frequency bins, made level-invariant by removing their mean; a small MLP predicts a
gain in [0, 1] per band, interpolated across bins and applied to the complex spectrum. TFLite
has a builtin RFFT but no inverse, so the inverse is built from the forward RFFT: the masked
spectrum's real part extended evenly plus its imaginary part extended oddly is one real
sequence whose RFFT holds both halves of the inverse transform.
"""

from __future__ import annotations

import numpy as np

RATE = 48000
FRAME = 1024
HOP = 512
BANDS = 32
LOW_BINS = 24
FLOOR = 1e-5  # smaller constants flush to 0 in fp16 and give log(0) = -inf


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


def build_denoiser(hidden: int = 256, seed: int = 0):
    """The Keras model: ``[batch, FRAME, 1]`` windowed noisy frames → enhanced frames."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    pool, spread = erb_band_matrices()
    bins = FRAME // 2 + 1

    class Spectrum(keras.layers.Layer):
        def call(self, frames):
            spectrum = tf.signal.rfft(tf.reshape(frames, [-1, FRAME]))
            return tf.math.real(spectrum), tf.math.imag(spectrum)

    class Features(keras.layers.Layer):
        def call(self, parts):
            re, im = parts
            power = re * re + im * im
            bands = tf.math.log(tf.matmul(power, tf.constant(pool)) + FLOOR)
            low = tf.math.log(power[:, 1:LOW_BINS + 1] + FLOOR)
            features = tf.concat([bands, low], axis=1)
            # Level invariance: a gain on the input shifts every log energy equally.
            return features - tf.reduce_mean(features, axis=1, keepdims=True)

    class MaskAndInvert(keras.layers.Layer):
        def call(self, parts):
            re, im, band_gains = parts
            gains = tf.matmul(band_gains, tf.constant(spread))
            re, im = re * gains, im * gains
            # Hermitian extension as one real sequence: even real part + odd imaginary part.
            even = tf.concat([re, tf.reverse(re[:, 1:bins - 1], axis=[1])], axis=1)
            odd = tf.concat([im, -tf.reverse(im[:, 1:bins - 1], axis=[1])], axis=1)
            spectrum = tf.signal.rfft(even + odd)
            real, imag = tf.math.real(spectrum), tf.math.imag(spectrum)
            first = real + imag
            second = tf.reverse((real - imag)[:, 1:bins - 1], axis=[1])
            frames = tf.concat([first, second], axis=1) / FRAME
            return tf.reshape(frames, [-1, FRAME, 1])

    frames = keras.Input(shape=(FRAME, 1), dtype="float32", name="audio")
    re, im = Spectrum()(frames)
    x = Features()([re, im])
    x = keras.layers.Dense(hidden, activation="relu")(x)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    gains = keras.layers.Dense(BANDS, activation="sigmoid",
                               bias_initializer=keras.initializers.Constant(2.0))(x)
    return keras.Model(frames, MaskAndInvert()([re, im, gains]), name="denoiser")


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

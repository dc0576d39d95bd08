"""The recurrent denoiser: two GRUs over the frames, their state an explicit tensor.

The same features, gains and output stage as :mod:`training.denoiser_model` (log energies in
48 ERB bands and 40 low bins; band and low-bin gains on the complex spectrum; the gain hold
and the low bins' smoothing in serving), but the gains come from a causal recurrent network
that carries what it has heard, instead of an MLP over a window of past frames::

    features ─ minus their mean level over the last NORM frames ─┬─ dense ─ GRU ─┬─ GRU ─(+)─┐
                                                                 │               └─────────┘ │
                                                                 └─────── concat ────────────┤
                                                                                   dense ─ gains

How the service runs it. A recurrent state would make a file's output depend on how the
file is cut into segments, so the file is cut on a fixed grid of ``GRID``-frame *cells*
from its first frame; each cell's GRUs start from zeros ``WARM`` frames before it (the cell
brings ``LEAD`` frames in front: those, and ``NORM - 1`` for the level window). Every
segment the pool sends starts on the grid and holds whole cells, which the file graph
(:func:`cell_module`) runs side by side, one row each; so any worker can run any segment, and
a long file is spread over the workers like any other. Streams run the stream step twin
(:func:`stream_step_module`): two rows, the current cell's and, from ``WARM`` frames before
the next cell, the next one's, so a stream's output equals the file's bit for bit. Training
runs are cells too: ``LEAD`` frames, then ``GRID`` whose outputs count.

The GRU loop is a TFLite ``WHILE`` whose outputs go to a ``DYNAMIC_UPDATE_SLICE`` in place (a
TensorArray would be copied at every step); its weights are float32 (float16 ones would be
dequantized at every step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.denoiser_model import (
    FEATURES,
    FRAME,
    HOLD,
    RELEASE,
    SMOOTH_LOW,
    tf_bin_gains,
    tf_features,
    tf_high_band_floor,
    tf_inverse,
)

UNITS = 256
NORM = 16  # a frame's features are taken relative to the mean level of the last NORM frames
WARM = 48  # training runs: outputs of the first WARM frames only warm the state up
LEAD = NORM - 1 + WARM  # silence in front of a stream, and of a training run's targets
GRID = 192  # files are cut on a grid of cells this many frames long, each with LEAD in front


def build_training(units: int = UNITS, seed: int = 0) -> Any:
    """The training model: ``[batch, LEAD + T, FEATURES]`` features of consecutive frames
    (:func:`training.denoiser_model.frame_features`) to ``[batch, T, FEATURES]`` raw gains
    of the last ``T`` (the first ``LEAD`` frames only fill the level window and warm up the
    GRUs from a zero state)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)

    class Gains(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.inp = keras.layers.Dense(units, activation="relu")
            self.gru1 = keras.layers.GRU(units, return_sequences=True)
            self.gru2 = keras.layers.GRU(units, return_sequences=True)
            self.head = keras.layers.Dense(FEATURES, activation="sigmoid",
                                           bias_initializer=keras.initializers.Constant(3.0))

        def call(self, x):
            level = tf.reduce_mean(x, axis=2, keepdims=True)
            relative = x[:, NORM - 1:] - tf.nn.avg_pool1d(level, NORM, 1, "VALID")
            h = self.gru1(self.inp(relative))
            h = h + self.gru2(h)
            return self.head(tf.concat([h, relative], axis=2))[:, WARM:]

    features = keras.Input((None, FEATURES), name="features")
    return keras.Model(features, Gains(name="gains")(features), name="denoiser_gru_train")


def _weights(training: Any) -> dict[str, np.ndarray]:
    """The training model's weights by role (Keras GRU: gates z, r, h; ``reset_after``)."""
    layer = training.get_layer("gains")
    out = {"inp_w": layer.inp.kernel, "inp_b": layer.inp.bias,
           "head_w": layer.head.kernel, "head_b": layer.head.bias}
    for name in ("gru1", "gru2"):
        cell = getattr(layer, name).cell
        out[f"{name}_w"], out[f"{name}_u"] = cell.kernel, cell.recurrent_kernel
        out[f"{name}_b"] = cell.bias  # [2, 3 units]: input bias, recurrent bias
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def _graph_parts(training: Any, smooth_low: bool) -> Any:
    """The pieces both served graphs are built of, as TensorFlow functions."""
    from types import SimpleNamespace

    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla

    w = _weights(training)
    units = w["inp_w"].shape[1]
    c = {k: tf.constant(v) for k, v in w.items()}

    def spectrum(frames):
        s = tf.signal.rfft(tf.reshape(frames, [-1, FRAME]))
        return tf.math.real(s), tf.math.imag(s)

    def analyse(frames):
        """A step's frames: their spectrum, how many, and their features."""
        re, im = spectrum(frames)
        return re, im, tf.shape(re)[0], tf_features(re, im)

    def window_mean(levels):
        """``[rows, m]`` levels to ``[rows, m - NORM + 1]`` means of NORM in a row."""
        return tf.squeeze(tf.nn.avg_pool1d(levels[..., None], NORM, 1, "VALID"), axis=2)

    def gru1_input(relative):
        hidden = tf.nn.relu(tf.matmul(relative, c["inp_w"]) + c["inp_b"])
        return tf.matmul(hidden, c["gru1_w"]) + c["gru1_b"][0:1]

    def gru(x_part, h, name):
        # One step of a Keras GRU (reset_after): x_part is the input's projection, bias in.
        hp = tf.matmul(h, c[f"{name}_u"]) + c[f"{name}_b"][1:2]
        z = tf.sigmoid(x_part[:, :units] + hp[:, :units])
        r = tf.sigmoid(x_part[:, units:2 * units] + hp[:, units:2 * units])
        candidate = tf.tanh(x_part[:, 2 * units:] + r * hp[:, 2 * units:])
        return z * h + (1 - z) * candidate

    def recur(x1, h1, h2, before_step=None):
        """Run both GRUs over ``x1`` (``[steps, rows, 3 units]``) from ``h1``, ``h2``
        (``[rows, units]``); ``before_step(t, h1, h2)`` may reset or copy rows first.
        Returns the outputs ``[steps, rows, units]`` and the last ``h1``, ``h2``."""
        steps, rows = tf.shape(x1)[0], tf.shape(x1)[1]

        def body(t, h1, h2, outs):
            if before_step is not None:
                h1, h2 = before_step(t, h1, h2)
            h1 = gru(tf.reshape(x1[t], [-1, 3 * units]), h1, "gru1")
            h2 = gru(tf.matmul(h1, c["gru2_w"]) + c["gru2_b"][0:1], h2, "gru2")
            # Written in place (DYNAMIC_UPDATE_SLICE): a TensorArray would copy every step.
            return t + 1, h1, h2, xla.dynamic_update_slice(outs, (h1 + h2)[None],
                                                           tf.stack([t, 0, 0]))

        shape = tf.TensorShape([None, units])
        _, h1, h2, outs = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), h1, h2,
                                            tf.zeros([steps, rows, units])),
            shape_invariants=(tf.TensorShape([]), shape, shape,
                              tf.TensorShape([None, None, units])))
        return outs, h1, h2

    def head(hidden, relative):
        return tf.sigmoid(tf.matmul(tf.concat([hidden, relative], axis=1), c["head_w"])
                          + c["head_b"])

    def apply(re, im, held):
        gains = tf_high_band_floor(tf_bin_gains(held, smooth_low), re, im)
        return tf_inverse(re * gains, im * gains)

    return SimpleNamespace(units=units, spectrum=spectrum, features=tf_features, analyse=analyse,
                           window_mean=window_mean, gru1_input=gru1_input, recur=recur,
                           head=head, apply=apply)


def cell_module(training: Any, grid: int = GRID, hold: int = HOLD, release: float = RELEASE,
                smooth_low: bool = SMOOTH_LOW) -> Any:
    """The file graph: ``[LEAD + n, FRAME, 1]`` windowed consecutive frames, the first
    ``LEAD`` only look-back, to as many frames (zeros for those ``LEAD``). The ``n`` frames
    are cut into cells of ``grid`` from the first on (the last one padded with silence); each
    cell's GRUs start from zeros ``WARM`` frames before its first frame, and the cells run
    side by side, a row each. So a block's output depends on where it starts on the grid: the
    service starts every block of a file at a multiple of ``grid`` frames (the model card's
    ``grid_frames``)."""
    import tensorflow as tf

    p = _graph_parts(training, smooth_low)
    length = LEAD + grid
    steps = length - NORM + 1

    class Cells(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, FRAME, 1], tf.float32, "audio")])
        def serve(self, frames):
            total = tf.shape(frames)[0]
            cells = tf.maximum(1, (total - LEAD + grid - 1) // grid)
            padded = tf.pad(tf.reshape(frames, [-1, FRAME]),
                            [[0, LEAD + cells * grid - total], [0, 0]])
            re, im = p.spectrum(padded)
            feats = p.features(re, im)
            rows = tf.reshape(tf.range(cells)[:, None] * grid + tf.range(length)[None],
                              [-1])
            feats = tf.reshape(tf.gather(feats, rows), [cells, length, FEATURES])
            relative = (feats[:, NORM - 1:]
                        - p.window_mean(tf.reduce_mean(feats, axis=2))[..., None])
            x1 = tf.reshape(p.gru1_input(tf.reshape(relative, [-1, FEATURES])),
                            [cells, steps, -1])
            zeros = tf.zeros([cells, p.units])
            outs, _, _ = p.recur(tf.transpose(x1, [1, 0, 2]), zeros, zeros)
            hidden = tf.reshape(tf.transpose(outs, [1, 0, 2]), [-1, p.units])
            raw = tf.reshape(p.head(hidden, tf.reshape(relative, [-1, FEATURES])),
                             [cells, steps, FEATURES])
            held = raw[:, WARM:]
            for k in range(1, hold + 1):
                held = tf.maximum(held, release ** k * raw[:, WARM - k:steps - k])
            out = p.apply(re[LEAD:], im[LEAD:], tf.reshape(held, [-1, FEATURES]))
            out = tf.concat([tf.zeros([LEAD, FRAME]), out], axis=0)[:total]
            return tf.reshape(out, [-1, FRAME, 1])

    return Cells()


def stream_state_size(units: int = UNITS, hold: int = HOLD) -> int:
    """Floats in a stream's state: the grid phase, ``NORM - 1`` levels, two rows of both
    GRUs' hidden vectors and two rows of ``hold`` frames' raw gains."""
    return 1 + NORM - 1 + 4 * units + 2 * hold * FEATURES


def stream_step_module(training: Any, grid: int = GRID, hold: int = HOLD,
                       release: float = RELEASE, smooth_low: bool = SMOOTH_LOW) -> Any:
    """The stream graph: (``[n, FRAME, 1]`` a stream's next windowed frames, ``[1, S]`` its
    state) to (the enhanced frames, the state after them), equal to :func:`cell_module`'s
    output frame for frame. Two rows run: row 0 the current cell's GRUs, row 1 the next
    cell's, from zeros ``WARM`` frames before it starts; there row 1 becomes row 0. A stream
    starts from a zero state with ``LEAD`` frames of silence in front, as cell 0 does."""
    import tensorflow as tf

    p = _graph_parts(training, smooth_low)
    units = p.units
    size = stream_state_size(units, hold)
    first_phase = (-LEAD) % grid  # of a stream's first frame, which a zero state stands for

    class Step(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, FRAME, 1], tf.float32, "audio"),
                                      tf.TensorSpec([1, size], tf.float32, "state")])
        def step(self, frames, state):
            re, im, count, feats = p.analyse(frames)
            at = 1
            levels = tf.concat([state[0, at:at + NORM - 1], tf.reduce_mean(feats, axis=1)],
                               axis=0)
            at += NORM - 1
            relative = feats - tf.reshape(p.window_mean(levels[None]), [-1, 1])
            x1 = p.gru1_input(relative)
            h1 = tf.reshape(state[0, at:at + 2 * units], [2, units])
            h2 = tf.reshape(state[0, at + 2 * units:at + 4 * units], [2, units])
            at += 4 * units
            phase0 = tf.cast(state[0, 0], tf.int32) + first_phase
            phases = tf.math.floormod(phase0 + tf.range(count), grid)
            zero_row = tf.zeros([1, units])

            def before_step(t, h1, h2):
                phase = phases[t]
                # The next cell's row starts from zeros WARM frames before the cell ...
                fresh = tf.equal(phase, grid - WARM)
                h1 = tf.where(fresh, tf.concat([h1[:1], zero_row], axis=0), h1)
                h2 = tf.where(fresh, tf.concat([h2[:1], zero_row], axis=0), h2)
                # ... and is the current row from the cell's first frame on.
                starts = tf.equal(phase, 0)
                h1 = tf.where(starts, tf.concat([h1[1:], h1[1:]], axis=0), h1)
                h2 = tf.where(starts, tf.concat([h2[1:], h2[1:]], axis=0), h2)
                return h1, h2

            x_rows = tf.tile(x1[:, None], [1, 2, 1])
            outs, h1, h2 = p.recur(x_rows, h1, h2, before_step)
            both = tf.reshape(p.head(tf.reshape(outs, [-1, units]),
                                     tf.reshape(tf.tile(relative[:, None], [1, 2, 1]),
                                                [-1, FEATURES])),
                              [count, 2, FEATURES])
            past = tf.reshape(state[0, at:at + 2 * hold * FEATURES], [hold, 2, FEATURES])
            raw = tf.concat([past, both], axis=0)  # [hold + count, 2, FEATURES]
            held = raw[hold:, 0]
            for k in range(1, hold + 1):
                # The gain k frames back from the same run: row 0's within the cell, row
                # 1's (then warming up) before it.
                back = tf.where((phases >= k)[:, None], raw[hold - k:hold - k + count, 0],
                                raw[hold - k:hold - k + count, 1])
                held = tf.maximum(held, release ** k * back)
            out = p.apply(re, im, held)
            after = tf.concat([
                tf.reshape(tf.cast(tf.math.floormod(tf.cast(state[0, 0], tf.int32) + count,
                                                    grid), tf.float32), [1, 1]),
                tf.reshape(levels[count:], [1, NORM - 1]),
                tf.reshape(h1, [1, -1]), tf.reshape(h2, [1, -1]),
                tf.reshape(raw[count:], [1, 2 * hold * FEATURES])], axis=1)
            return tf.reshape(out, [-1, FRAME, 1]), after

    return Step()


def chain_state_size(units: int = UNITS, hold: int = HOLD) -> int:
    """Floats in a chain's state: whether it has started, ``NORM - 1`` levels, both GRUs'
    hidden vectors and ``hold`` frames' raw gains."""
    return 1 + NORM - 1 + 2 * units + hold * FEATURES


def chain_step_module(training: Any, hold: int = HOLD, release: float = RELEASE,
                      smooth_low: bool = SMOOTH_LOW) -> Any:
    """The chain graph: (``[n, FRAME, 1]`` the next windowed frames, ``[1, S]`` the state)
    to (the enhanced frames, the state after them), one state from a file's or stream's
    first frame to its last: no cells, so a file has no seams and its output does not depend
    on how it is cut into calls. A zero state stands for silence heard before (its levels
    those of silent frames) and GRUs at zero; a file or stream brings ``WARM`` frames of
    silence in front (the card's ``context_frames``), so it starts exactly as the file
    graph's first cell does."""
    import tensorflow as tf

    p = _graph_parts(training, smooth_low)
    units = p.units
    size = chain_state_size(units, hold)

    class Chain(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, FRAME, 1], tf.float32, "audio"),
                                      tf.TensorSpec([1, size], tf.float32, "state")])
        def step(self, frames, state):
            re, im, count, feats = p.analyse(frames)
            silent = tf.reduce_mean(p.features(*p.spectrum(tf.zeros([1, FRAME, 1]))), axis=1)
            started = tf.greater(state[0, 0], 0.0)
            before = tf.where(started, state[0, 1:NORM], tf.tile(silent, [NORM - 1]))
            levels = tf.concat([before, tf.reduce_mean(feats, axis=1)], axis=0)
            at = NORM
            relative = feats - tf.reshape(p.window_mean(levels[None]), [-1, 1])
            h1 = tf.reshape(state[0, at:at + units], [1, units])
            h2 = tf.reshape(state[0, at + units:at + 2 * units], [1, units])
            at += 2 * units
            outs, h1, h2 = p.recur(p.gru1_input(relative)[:, None], h1, h2)
            gains = p.head(tf.reshape(outs, [-1, units]), relative)
            past = tf.reshape(state[0, at:at + hold * FEATURES], [hold, FEATURES])
            raw = tf.concat([past, gains], axis=0)  # [hold + count, FEATURES]
            held = raw[hold:]
            for k in range(1, hold + 1):
                held = tf.maximum(held, release ** k * raw[hold - k:hold - k + count])
            out = p.apply(re, im, held)
            after = tf.concat([tf.ones([1, 1]), tf.reshape(levels[count:], [1, NORM - 1]),
                               h1, h2, tf.reshape(raw[count:], [1, hold * FEATURES])], axis=1)
            return tf.reshape(out, [-1, FRAME, 1]), after

    return Chain()


def export_fp32(module: Any, tflite_path: Any) -> bytes:
    """Convert ``module``'s graph with builtin ops only, float32 weights (float16 ones would be
    dequantized at every step of the GRU loop); write and return the bytes."""
    from pathlib import Path

    import tensorflow as tf

    function = module.step if hasattr(module, "step") else module.serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    data = converter.convert()
    Path(tflite_path).write_bytes(data)
    return data

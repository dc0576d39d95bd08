"""Rebuild an ONNX graph as TensorFlow ops, one node at a time, for a per-frame step graph.

``onnx2tf`` fails on DeepFilterNet3's GRUs (it transposes the GRU weight as if it were an image);
walking the graph and emitting the same ops with the ONNX initializers as weights works and
keeps to TFLite builtins. Every value is either a numpy array (known at conversion time: the
shape arithmetic the exporter left in, folded here) or a TensorFlow tensor.

Step mode: the time axis is 1 (or a block graph's few frames, each GRU unrolled over them)
and every state is explicit. A ``Pad`` that pads the time axis in
front (a causal convolution's history) becomes a concatenation with a state buffer of that many
past frames; a ``GRU``'s initial state becomes a state input and its last output the state
output. Nothing may pad the time axis at the back (a look-ahead): that raises.
Used by ``tools.dfn3_export``; other ONNX speech models with the same ops can reuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import tensorflow as tf
from onnx import helper, numpy_helper

TIME_AXIS = 2  # [batch, channels, time, frequency] in the convolutions, as PyTorch exports them


@dataclass
class StepStates:
    """The state tensors a step graph reads (``inputs``) and writes (``outputs``), by name."""

    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def read(self, name: str, shape: tuple[int, ...]) -> Any:
        """The state's input; zeros while the states are being discovered (an eager pass)."""
        self.shapes[name] = shape
        if name in self.inputs:
            return self.inputs[name]
        return np.zeros(shape, np.float32)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value
    return out


def _const(*values: Any) -> bool:
    return all(isinstance(v, np.ndarray) for v in values)


def _shape(x: Any) -> np.ndarray:
    return np.array(x.shape if isinstance(x, np.ndarray) else x.shape.as_list(), np.int64)


def _slice(x: Any, starts: Any, ends: Any, axes: Any = None, steps: Any = None) -> Any:
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * len(_shape(x))
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[int(axis)] = slice(int(start), None if end >= 2 ** 62 or end <= -2 ** 62
                                 else int(end), int(step))
    return x[tuple(index)]


def _pad(x: Any, pads: np.ndarray, name: str, states: StepStates) -> Any:
    rank = len(pads) // 2
    begin, end = pads[:rank].astype(int), pads[rank:].astype(int)
    if end[TIME_AXIS]:
        raise ValueError(f"{name}: pads the time axis at the back (a look-ahead)")
    history = int(begin[TIME_AXIS])
    begin[TIME_AXIS] = 0
    if history:  # a causal convolution's past frames: a state buffer
        shape = tuple(int(d) for d in _shape(x))
        shape = (*shape[:TIME_AXIS], history, *shape[TIME_AXIS + 1:])
        x = tf.concat([states.read(name, shape), x], axis=TIME_AXIS)
        states.outputs[name] = x[:, :, -history:]
    if begin.any() or end.any():
        x = tf.pad(x, np.stack([begin, end], axis=1))
    return x


def _conv(x: Any, w: np.ndarray, b: np.ndarray | None, a: dict) -> Any:
    """ONNX Conv (NCHW) as TFLite CONV_2D / DEPTHWISE_CONV_2D (NHWC); groups that are neither
    one nor depthwise are split into one convolution per group."""
    top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
    group, strides = a.get("group", 1), [1, *a.get("strides", [1, 1]), 1]
    y = tf.transpose(x, [0, 2, 3, 1])
    if top or left or bottom or right:
        y = tf.pad(y, [[0, 0], [top, bottom], [left, right], [0, 0]])
    out_ch, in_per_group = w.shape[:2]
    if group == 1:
        y = tf.nn.conv2d(y, np.transpose(w, [2, 3, 1, 0]), strides, "VALID")
    elif in_per_group == 1:  # depthwise, out_ch // group outputs per input channel
        kernel = np.transpose(w.reshape(group, out_ch // group, *w.shape[2:]), [2, 3, 0, 1])
        if strides[1] == strides[2]:
            y = tf.nn.depthwise_conv2d(y, kernel, strides, "VALID")
        elif int(y.shape[1]) == 1 and w.shape[2] == 1:  # TF's depthwise needs equal strides:
            # striding a one-frame time axis alike changes nothing
            y = tf.nn.depthwise_conv2d(y, kernel, [1, strides[2], strides[2], 1], "VALID")
        else:  # stride 1, then keep every n-th
            y = tf.nn.depthwise_conv2d(y, kernel, [1, 1, 1, 1], "VALID")
            y = y[:, ::strides[1], ::strides[2]]
    else:
        parts = tf.split(y, group, axis=3)
        step = out_ch // group
        y = tf.concat([tf.nn.conv2d(p, np.transpose(w[g * step:(g + 1) * step], [2, 3, 1, 0]),
                                    strides, "VALID") for g, p in enumerate(parts)], axis=3)
    if b is not None:
        y = y + b
    return tf.transpose(y, [0, 3, 1, 2])


def _conv_transpose(x: Any, w: np.ndarray, a: dict) -> Any:
    """A depthwise strided ConvTranspose as zero insertion plus a depthwise convolution of the
    flipped kernel (TFLite's TRANSPOSE_CONV has no groups)."""
    channels = int(_shape(x)[1])
    if a.get("group", 1) != channels or w.shape[1] != 1 or a["strides"][0] != 1:
        raise NotImplementedError("only depthwise ConvTranspose striding the last axis")
    stride, kernel = a["strides"][1], w.shape[3]
    _, left, _, right = a["pads"]
    extra = a.get("output_padding", [0, 0])[1]
    y = tf.transpose(x, [0, 2, 3, 1])  # NHWC
    n, h, width = 1, int(_shape(x)[2]), int(_shape(x)[3])
    zeros = [tf.zeros_like(y)] * (stride - 1)
    y = tf.reshape(tf.stack([y, *zeros], axis=3), [n, h, width * stride, channels])
    y = y[:, :, :width * stride - (stride - 1)]
    y = tf.pad(y, [[0, 0], [0, 0], [kernel - 1 - left, kernel - 1 - right + extra], [0, 0]])
    flipped = np.transpose(w[:, :, :, ::-1], [2, 3, 0, 1])  # [1, kernel, channels, 1]
    y = tf.nn.depthwise_conv2d(y, flipped, [1, 1, 1, 1], "VALID")
    return tf.transpose(y, [0, 3, 1, 2])


def _einsum(x: Any, w: np.ndarray, equation: str) -> Any:
    """'btgi,gih->btgh' (grouped linear) as BATCH_MATMUL over the groups."""
    if equation != "btgi,gih->btgh":
        raise NotImplementedError(equation)
    b, t, g, i = (int(d) for d in _shape(x))
    y = tf.reshape(x, [b * t, g, i])
    y = tf.transpose(y, [1, 0, 2]) if b * t > 1 else tf.reshape(y, [g, 1, i])
    y = tf.matmul(y, w)  # [g, b*t, h]
    y = tf.transpose(y, [1, 0, 2]) if b * t > 1 else tf.reshape(y, [1, g, w.shape[2]])
    return tf.reshape(y, [b, t, g, w.shape[2]])


def _gru(inputs: list[Any], a: dict, name: str, states: StepStates) -> list[Any]:
    """An ONNX GRU (gates z, r, h; ``linear_before_reset``), its state explicit: one step, or
    the frames of a block graph unrolled, their input projections done at once."""
    x, w, r, bias = inputs[:4]
    if not a.get("linear_before_reset", 0):
        raise NotImplementedError("a GRU step needs linear_before_reset")
    hidden = a["hidden_size"]
    steps, batch = int(_shape(x)[0]), int(_shape(x)[1])
    h = states.read(name, (1, batch, hidden))[0]
    if steps == 1:
        projections = [tf.matmul(x[0], w[0].T) + bias[0, :3 * hidden]]
    else:
        together = tf.matmul(tf.reshape(x, [steps * batch, -1]), w[0].T) + bias[0, :3 * hidden]
        projections = [together[t * batch:(t + 1) * batch] for t in range(steps)]
    outputs = []
    for gates_x in projections:
        gates_h = tf.matmul(h, r[0].T) + bias[0, 3 * hidden:]
        xz, xr, xh = tf.split(gates_x, 3, axis=1)
        hz, hr, hh = tf.split(gates_h, 3, axis=1)
        z, reset = tf.sigmoid(xz + hz), tf.sigmoid(xr + hr)
        h = (1 - z) * tf.tanh(xh + reset * hh) + z * h
        outputs.append(h)
    states.outputs[name] = h[None]
    if steps == 1:
        return [h[None, None], h[None]]
    return [tf.stack(outputs)[:, None], h[None]]


_FOLD: dict[str, Callable[..., Any]] = {
    "Shape": lambda a, x: _shape(x),
    "Gather": lambda a, x, i: np.take(x, i, axis=a.get("axis", 0)),
    "Unsqueeze": lambda a, x: np.expand_dims(x, tuple(a["axes"])),
    "Squeeze": lambda a, x: np.squeeze(x, tuple(a["axes"])),
    "Concat": lambda a, *xs: np.concatenate(xs, axis=a["axis"]),
    "Reshape": lambda a, x, s: x.reshape(tuple(s)),
    "Transpose": lambda a, x: np.transpose(x, a.get("perm")),
    "Cast": lambda a, x: x.astype(helper.tensor_dtype_to_np_dtype(a["to"])),
    "ConstantOfShape": lambda a, s: np.full(tuple(s), a["value"][0], a["value"].dtype),
    "Slice": lambda a, x, *r: _slice(x, *r),
    "Add": lambda a, x, y: x + y,
    "Mul": lambda a, x, y: x * y,
}


def _reshape(x: Any, shape: np.ndarray) -> Any:
    target = [int(d) if d != 0 else int(_shape(x)[i]) for i, d in enumerate(shape)]
    return tf.reshape(x, target)


_TF: dict[str, Callable[..., Any]] = {
    "Relu": lambda a, x: tf.nn.relu(x),
    "Sigmoid": lambda a, x: tf.sigmoid(x),
    "Tanh": lambda a, x: tf.tanh(x),
    "Add": lambda a, x, y: x + y,
    "Mul": lambda a, x, y: x * y,
    "MatMul": lambda a, x, y: tf.matmul(x, y) if len(_shape(x)) == 2 else
    tf.reshape(tf.matmul(tf.reshape(x, [-1, int(_shape(x)[-1])]), y),
               [*(int(d) for d in _shape(x)[:-1]), int(_shape(y)[-1])]),
    "Reshape": lambda a, x, s: _reshape(x, s),
    "Transpose": lambda a, x: tf.transpose(x, a.get("perm")),
    "Squeeze": lambda a, x: tf.squeeze(x, a["axes"]),
    "Unsqueeze": lambda a, x: tf.expand_dims(x, a["axes"][0]),
    "Concat": lambda a, *xs: tf.concat(list(xs), axis=a["axis"]),
    "Slice": lambda a, x, *r: _slice(x, *r),
    "Conv": lambda a, x, w, b=None: _conv(x, w, b, a),
    "ConvTranspose": lambda a, x, w: _conv_transpose(x, w, a),
    "Einsum": lambda a, x, w: _einsum(x, w, a["equation"].decode()),
}


def run_step_graph(graph: onnx.GraphProto, prefix: str, inputs: dict[str, Any],
                   states: StepStates) -> dict[str, Any]:
    """The graph's outputs for one frame; state names are ``prefix`` plus the ONNX node's
    output name, so several graphs can share one :class:`StepStates`."""
    values: dict[str, Any] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    values.update(inputs)
    for node in graph.node:
        a = _attrs(node)
        args = [values[i] if i else None for i in node.input]
        while args and args[-1] is None:
            args.pop()
        name = prefix + node.output[0]
        if node.op_type == "Constant":
            outs = [a["value"]]
        elif node.op_type == "Pad":
            outs = [_pad(args[0], np.asarray(args[1]), name, states)]
        elif node.op_type == "GRU":
            outs = _gru(args, a, name, states)
        elif node.op_type == "Shape" or (node.op_type in _FOLD and _const(*args)):
            outs = [np.asarray(_FOLD[node.op_type](a, *args))]
        elif node.op_type in _TF:
            outs = [_TF[node.op_type](a, *args)]
        else:
            raise NotImplementedError(f"{node.op_type} ({node.name})")
        values.update(zip(node.output, outs, strict=False))
    return {o.name: values[o.name] for o in graph.output}

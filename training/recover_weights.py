"""Recover the shipped recurrent denoiser's training weights from its step graph.

Training saves its weights beside the model (``.weights.h5``), but only the ``.tflite`` graphs
are shipped. Every weight is a constant of a step graph (the chain graph the service runs, or
the cells' stream step twin): the input layer, the first
GRU's input projection and the head are ``FULLY_CONNECTED`` ops of the main graph, the GRUs'
recurrent kernels and the second GRU's input projection those of the ``WHILE`` loop's body,
told apart by their names (TensorFlow numbers ``while/MatMul``, ``_1``, ``_2`` in the order
:func:`training.recurrent_model._graph_parts` makes them: the first GRU's recurrent kernel,
the second's input and recurrent kernels), not by their order in the graph, which the
converter chooses. ``FULLY_CONNECTED`` stores a kernel transposed. Re-exporting the recovered
weights gives the shipped graph byte for byte (``tests/test_training.py``), so the shipped
model can be rebuilt in another form (``training.export_recurrent --form cells``) without
training it again.

Run: ``python -m training.recover_weights models/denoiser_48k.tflite OUT.weights.h5``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from training.recurrent_model import build_training

FULLY_CONNECTED = 9  # tflite's BuiltinOperator


def fully_connected(model_path: Path) -> list[list[tuple[str, np.ndarray, np.ndarray | None]]]:
    """Per subgraph, the (weights' name, weights, bias) of each ``FULLY_CONNECTED`` op."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(model_path))

    def constant(graph: Any, index: int) -> np.ndarray | None:
        if index < 0:  # no bias
            return None
        tensor = graph.tensors[index]
        data = model.buffers[tensor.buffer].data
        return np.frombuffer(bytes(data), np.float32).reshape(tensor.shape)

    found = []
    for graph in model.subgraphs:
        ops = [op for op in graph.operators
               if model.operatorCodes[op.opcodeIndex].builtinCode == FULLY_CONNECTED]
        found.append([(graph.tensors[op.inputs[1]].name.decode(),
                       constant(graph, op.inputs[1]), constant(graph, op.inputs[2]))
                      for op in ops])
    return found


def recover(step_model: Path) -> Any:
    """The training model (:func:`build_training`) holding the step graph's weights."""
    main, *others = fully_connected(step_model)
    loop = next(ops for ops in others if len(ops) == 3)  # the GRU loop's body
    body = [(w, b) for _, w, b in sorted(loop, key=lambda fc: _number(fc[0]))]
    units = body[0][0].shape[1]
    # The main graph's: the input layer [units, features], the first GRU's input projection
    # [3 units, units] and the head [features, units + features] (the spectral transforms
    # are matrices of other shapes).
    by_shape = [(w, b) for _, w, b in main]
    inp = next(fc for fc in by_shape if fc[0].shape[0] == units)
    gru1_in = next(fc for fc in by_shape if fc[0].shape == (3 * units, units))
    head = next(fc for fc in by_shape if fc[0].shape[1] == units + fc[0].shape[0])
    (gru1_u, gru1_rb), (gru2_w, gru2_ib), (gru2_u, gru2_rb) = body
    training = build_training(units)
    layer = training.get_layer("gains")
    layer.inp.kernel.assign(inp[0].T)
    layer.inp.bias.assign(inp[1])
    layer.head.kernel.assign(head[0].T)
    layer.head.bias.assign(head[1])
    for gru, kernel, recurrent, input_bias, recurrent_bias in (
            (layer.gru1, gru1_in[0], gru1_u, gru1_in[1], gru1_rb),
            (layer.gru2, gru2_w, gru2_u, gru2_ib, gru2_rb)):
        gru.cell.kernel.assign(kernel.T)
        gru.cell.recurrent_kernel.assign(recurrent.T)
        gru.cell.bias.assign(np.stack([input_bias, recurrent_bias]))
    return training


def _number(name: str) -> int:
    """``while/MatMul`` 0, ``while/MatMul_2`` 2."""
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step_model", type=Path)
    parser.add_argument("weights", type=Path)
    args = parser.parse_args()
    recover(args.step_model).save_weights(args.weights)
    print(f"wrote {args.weights}")

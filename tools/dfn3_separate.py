"""The comparison that chose one merged step graph: DeepFilterNet3's three graphs as three
separate TFLite step graphs (the probe's layout), called one after the other per frame.

Run: ``python -m tools.dfn3_separate FOLDER`` writes ``enc.tflite``, ``erb_dec.tflite`` and
``df_dec.tflite`` there; ``python -m tools.dfn3_speed --separate FOLDER`` times them beside the
merged graph. Not shipped: the merged graph measured faster (docs/models.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

GRAPHS = ("enc", "erb_dec", "df_dec")


def _input_shapes(graph: Any) -> dict[str, list[int]]:
    """The graph's inputs with time (and any other symbolic axis but channels) set to 1."""
    return {i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
            for i in graph.input}


def build_separate(archive: dict, layout: list[dict], name: str) -> Any:
    """One graph's step module: its inputs and its own states (a flat vector) in, its outputs
    and next states out."""
    import tensorflow as tf

    from tools.dfn3_onnx_tf import StepStates, run_step_graph

    graph = archive[name].graph
    mine = [s for s in layout if s["name"].startswith(name + "/")]
    base = mine[0]["offset"]
    size = sum(s["size"] for s in mine)
    shapes = _input_shapes(graph)
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


class SeparateSteps:
    """The three step graphs called in turn, as the probe did (tensors set and read by index,
    as :class:`enhancer.model.dfn3.Dfn3StepModel` does): one frame's outputs."""

    def __init__(self, folder: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreters, self.names, self.states = {}, {}, {}
        for name in GRAPHS:
            it = Interpreter(model_path=str(folder / f"{name}.tflite"), num_threads=1)
            it.allocate_tensors()
            self.interpreters[name] = it
            runner = it.get_signature_runner("serving_default")
            self.names[name] = {
                "inputs": {k: v["index"] for k, v in runner.get_input_details().items()},
                "outputs": {k: v["index"] for k, v in runner.get_output_details().items()}}
            size = it.get_tensor(self.names[name]["inputs"]["state"]).shape[0]
            self.states[name] = np.zeros(size, np.float32)

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it, names = self.interpreters[name], self.names[name]
        for key, value in {**feeds, "state": self.states[name]}.items():
            it.set_tensor(names["inputs"][key], value)
        it.invoke()
        out = {key: it.get_tensor(index) for key, index in names["outputs"].items()}
        self.states[name] = out.pop("new_state")
        return out

    def __call__(self, erb: np.ndarray, spec: np.ndarray) -> tuple[Any, Any, Any]:
        enc = self._run("enc", {"feat_erb": erb.reshape(1, 1, 1, -1),
                                "feat_spec": spec.reshape(1, 2, 1, -1)})
        m = self._run("erb_dec", {k: enc[k] for k in ("emb", "e3", "e2", "e1", "e0")})
        coefs = self._run("df_dec", {"emb": enc["emb"], "c0": enc["c0"]})
        return enc["lsnr"], m["m"], coefs["coefs"]


def main(argv: list[str] | None = None) -> int:
    from tools.dfn3_export import convert, read_archive, state_layout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    archive = read_archive()
    layout = state_layout(archive)
    for name in GRAPHS:
        (args.folder / f"{name}.tflite").write_bytes(
            convert(build_separate(archive, layout, name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

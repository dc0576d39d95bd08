"""The comparison that chose one merged step graph for a hop at a time: DeepFilterNet3's three
graphs as three separate TFLite step graphs (the probe's layout), called one after the other.

Run: ``python -m tools.dfn3_separate FOLDER`` writes ``enc.tflite``, ``erb_dec.tflite`` and
``df_dec.tflite`` there; ``python -m tools.dfn3_speed --separate FOLDER`` times them beside the
merged graph, ``python -m tools.dfn3_split_probe FOLDER`` splits one file over two cores with
them. One hop a call they are not shipped (the merged graph measured faster, docs/models.md);
four hops a call, as ``make models`` builds them, they run a file's blocks.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

GRAPHS = ("enc", "erb_dec", "df_dec")


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
    from tools.dfn3_export import block_graph, convert, read_archive, state_layout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    archive = read_archive()
    layout = state_layout(archive)
    for name in GRAPHS:
        (args.folder / f"{name}.tflite").write_bytes(
            convert(block_graph(archive, layout, name, frames=1)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""DeepFilterNet3 as the pipeline runs it: a stream step over :class:`~enhancer.model.dfn3.Dfn3`.

:class:`Dfn3StepRunner` takes 480-sample frames and the whole state (:class:`Dfn3State`,
packed into one float32 vector) in, gives the frames out and the state after them, as the
shipped denoiser's step graph does; a file is one chain of such steps
(:mod:`enhancer.backends.chain`), so its state never restarts and a stream of any chunking
equals it bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from enhancer.model.dfn3 import (
    BINS,
    DF_ORDER,
    F32,
    FFT_SIZE,
    HOP,
    LOOKAHEAD,
    NB_DF,
    NB_ERB,
    Dfn3,
    Dfn3State,
    Dfn3StepModel,
)
from enhancer.model.dfn3_blocks import Dfn3Blocks

# A packed state: [started, silent frames, the graph's state, analysis and synthesis memory,
# the two normalisation states, the spectra (complex as float pairs)]. All zeros is a new
# stream: ``started`` 0 means "take libdf's initial states".
_PACKED = (("started", 1), ("silent", 1), ("net", 0), ("analysis", FFT_SIZE - HOP),
           ("synthesis", FFT_SIZE - HOP), ("mean_norm", NB_ERB), ("unit_norm", NB_DF),
           ("spectra", 2 * max(DF_ORDER, LOOKAHEAD) * BINS))


def packed_state_size(net_size: int) -> int:
    """Floats of a packed :class:`Dfn3State` whose step graph carries ``net_size``."""
    return sum(size or net_size for _, size in _PACKED)


class Dfn3StepRunner:
    """DeepFilterNet3 as the pipeline's stream step: ``run(frames, state)`` takes ``[n, 480]``
    float32 frames and a packed state, returns the ``[n, 480]`` frames out (each the input of
    1440 samples before: the pipeline removes the delay, see the card's ``latency_samples``)
    and the packed state after them. ``frame_length`` and ``state_size`` as
    :class:`~enhancer.model.runner.StreamStepRunner`'s."""

    frame_length = HOP

    def __init__(self, model_path: str | Path, num_threads: int = 1) -> None:
        self.model = Dfn3StepModel(model_path, num_threads=num_threads)
        blocks = Dfn3Blocks.from_card(Path(model_path), self.model.decoders)
        self.engine = Dfn3(self.model, blocks=blocks)
        self.state_size = packed_state_size(self.model.state_size)
        self._slices: dict[str, slice] = {}
        at = 0
        for name, size in _PACKED:
            size = size or self.model.state_size
            self._slices[name] = slice(at, at + size)
            at += size

    def unpack(self, packed: np.ndarray) -> Dfn3State:
        part = {name: np.asarray(packed[where], F32) for name, where in self._slices.items()}
        if part["started"][0] == 0:
            return self.engine.new_state()
        return Dfn3State(net=part["net"].copy(), analysis=part["analysis"].copy(),
                         synthesis=part["synthesis"].copy(),
                         mean_norm=part["mean_norm"].copy(), unit_norm=part["unit_norm"].copy(),
                         spectra=part["spectra"].copy().view(np.complex64).reshape(-1, BINS),
                         silent=int(part["silent"][0]))

    def pack(self, state: Dfn3State) -> np.ndarray:
        packed = np.empty(self.state_size, F32)
        packed[self._slices["started"]] = 1
        packed[self._slices["silent"]] = state.silent
        for name in ("net", "analysis", "synthesis", "mean_norm", "unit_norm"):
            packed[self._slices[name]] = getattr(state, name)
        packed[self._slices["spectra"]] = state.spectra.reshape(-1).view(F32)
        return packed

    def run(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``frames`` from ``state``: the frames out and the packed state after them."""
        current = self.unpack(state)
        out = self.engine.process_block(frames, current)
        return out, self.pack(current)

    def run_fresh(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` from a new stream's state (what a speed measurement needs)."""
        return self.run(frames, np.zeros(self.state_size, F32))[0]


class Dfn3FrameRunner:
    """The pipeline's frame model view of DeepFilterNet3 (``run(frames)``, each call from a
    new state): only what measuring its speed needs, as files go through the step."""

    def __init__(self, step: Dfn3StepRunner) -> None:
        self.step = step
        self.frame_length = step.frame_length

    def run(self, frames: np.ndarray) -> np.ndarray:
        return self.step.run_fresh(frames)


def is_dfn3_step_graph(signature_inputs: set[str]) -> bool:
    """Whether a TFLite graph with these signature inputs is a DeepFilterNet3 step graph."""
    return signature_inputs == {"feat_erb", "feat_spec", "state"}

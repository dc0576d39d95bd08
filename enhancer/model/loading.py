"""Which runner a model file needs: a TFLite frame model and its step twin
(:mod:`enhancer.model.runner`), or DeepFilterNet3's step graph with libdf's signal path around
it (:mod:`enhancer.model.dfn3_runner`), told apart by the graph's inputs."""

from __future__ import annotations

from pathlib import Path

from enhancer.errors import ModelError
from enhancer.model.dfn3_runner import Dfn3FrameRunner, Dfn3StepRunner, is_dfn3_step_graph
from enhancer.model.runner import (
    FrameModel,
    ModelRunner,
    StepModel,
    StreamStepRunner,
    load_interpreter,
)


def _signature_inputs(model_path: Path) -> set[str]:
    """The input names of the model's serving signature (none if it has no signature)."""
    interpreter = load_interpreter(model_path, 1, "model")
    signatures = interpreter.get_signature_list()
    return set(signatures.get("serving_default", {}).get("inputs", []))


def load_model_runner(model_path: str | Path, num_threads: int = 1) -> FrameModel:
    """The runner for a model file: a frame model, or DeepFilterNet3's step graph run from a
    new state each call (:class:`enhancer.model.dfn3_runner.Dfn3FrameRunner`)."""
    model_path = Path(model_path)
    if is_dfn3_step_graph(_signature_inputs(model_path)):
        return Dfn3FrameRunner(Dfn3StepRunner(model_path, num_threads))
    return ModelRunner(model_path, num_threads)


def load_step_runner(model_path: str | Path, frame_length: int, state_size: int,
                     num_threads: int = 1) -> StepModel:
    """The runner for a stream step twin: a TFLite step model, or DeepFilterNet3's step graph
    with libdf's signal path around it (:class:`enhancer.model.dfn3_runner.Dfn3StepRunner`)."""
    model_path = Path(model_path)
    if not is_dfn3_step_graph(_signature_inputs(model_path)):
        return StreamStepRunner(model_path, frame_length, state_size, num_threads)
    step = Dfn3StepRunner(model_path, num_threads)
    if (step.frame_length, step.state_size) != (frame_length, state_size):
        raise ModelError(f"stream step model {model_path} runs frames of {step.frame_length} "
                         f"with a state of {step.state_size} floats, the card says "
                         f"{frame_length} and {state_size}")
    return step

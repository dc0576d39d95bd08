"""Which runner a model file needs: a TFLite frame model and its step twin
(:mod:`enhancer.model.runner`), a step graph alone (a chained model's: the denoiser's), or
DeepFilterNet3's step graph with libdf's signal path around it
(:mod:`enhancer.model.dfn3_runner`), told apart by the graph's inputs."""

from __future__ import annotations

from pathlib import Path

from enhancer.errors import ModelError
from enhancer.model.dfn3_runner import Dfn3FrameRunner, Dfn3StepRunner, is_dfn3_step_graph
from enhancer.model.runner import (
    FrameModel,
    ModelRunner,
    StepFrameRunner,
    StepModel,
    StreamStepRunner,
    load_interpreter,
)

# A stream step graph's inputs: the next frames and the state.
STEP_INPUTS = frozenset({"audio", "state"})


def _signature_inputs(model_path: Path) -> set[str]:
    """The input names of the model's serving signature (none if it has no signature)."""
    interpreter = load_interpreter(model_path, 1, "model", allocate=False)
    signatures = interpreter.get_signature_list()
    return set(signatures.get("serving_default", {}).get("inputs", []))


def load_model_runner(model_path: str | Path, num_threads: int = 1) -> FrameModel:
    """The runner for a model file: a frame model, or a step graph run from a new state each
    call (:class:`~enhancer.model.runner.StepFrameRunner`, DeepFilterNet3's
    :class:`~enhancer.model.dfn3_runner.Dfn3FrameRunner`)."""
    model_path = Path(model_path)
    inputs = _signature_inputs(model_path)
    if is_dfn3_step_graph(inputs):
        return Dfn3FrameRunner(Dfn3StepRunner(model_path, num_threads))
    if inputs == STEP_INPUTS:
        return StepFrameRunner(StreamStepRunner(model_path, num_threads=num_threads))
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


def load_runners(model_path: str | Path, step_model_path: str | Path | None, frame_length: int,
                 state_size: int, num_threads: int = 1) -> tuple[FrameModel, StepModel | None]:
    """The model's runner and its stream step's (None without one): one interpreter for both
    when the model is its own stream step, as a chained model's graph is."""
    runner = load_model_runner(model_path, num_threads)
    if step_model_path is None:
        return runner, None
    if Path(step_model_path) != Path(model_path) or not isinstance(
            runner, StepFrameRunner | Dfn3FrameRunner):
        return runner, load_step_runner(step_model_path, frame_length, state_size, num_threads)
    step = runner.step
    if (step.frame_length, step.state_size) != (frame_length, state_size):
        raise ModelError(f"stream step model {step_model_path} runs frames of "
                         f"{step.frame_length} with a state of {step.state_size} floats, the "
                         f"card says {frame_length} and {state_size}")
    return runner, step

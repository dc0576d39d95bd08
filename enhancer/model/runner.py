"""One LiteRT interpreter: a block of frames in, the model's frames out.

Knows the ``.tflite`` file and nothing of processes, queues or HTTP, so the same class serves
the pool's workers and the inline (``num_processes=0``) path.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from enhancer.errors import ModelError


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 while C code prints to it (LiteRT's XNNPACK INFO line, or
    libsndfile's MP3 decoder).

    The lines go from C straight to fd 2, so ``sys.stderr`` redirection cannot catch them;
    the CLI keeps stderr for messages to the user.
    """
    sys.stderr.flush()  # what Python wrote before still shows
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FrameModel(Protocol):
    """What runs a block of frames: :class:`ModelRunner`, or DeepFilterNet3's frame view."""

    frame_length: int

    def run(self, frames: np.ndarray) -> np.ndarray: ...


class StepModel(Protocol):
    """What runs a stream step: :class:`StreamStepRunner`, or DeepFilterNet3's runner."""

    frame_length: int
    state_size: int

    def run(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def load_interpreter(model_path: Path, num_threads: int, what: str,
                     allocate: bool = True) -> Any:
    """A LiteRT interpreter of ``model_path``, its tensors allocated (unless ``allocate`` is
    False: enough to read its signature); ``ModelError`` naming the path when the file is
    missing or not a model LiteRT can run."""
    if not model_path.is_file():
        raise ModelError(f"{what} file not found: {model_path}")
    from ai_edge_litert.interpreter import Interpreter

    try:
        with stderr_silenced():
            interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
            if allocate:  # the delegate (and its INFO line) comes with the first allocation
                interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load model {model_path}: {exc}") from None
    return interpreter


class ModelRunner:
    """Run a TFLite model whose input is ``[batch, frame_length, 1]`` float32.

    Parameters
    ----------
    model_path : str or Path
        The ``.tflite`` file.
    num_threads : int
        Interpreter threads; 1 per worker process is best when there is one worker per core.

    Raises
    ------
    ModelError
        The file is missing or unreadable, or its input/output is not ``[batch, frame, 1]``
        float32. The message names the path and the shape found.
    """

    def __init__(self, model_path: str | Path, num_threads: int = 1) -> None:
        self.model_path = Path(model_path)
        self._interpreter = load_interpreter(self.model_path, num_threads, "model")

        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"model {self.model_path} must have one input and one output, "
                             f"found {len(inputs)} inputs and {len(outputs)} outputs")
        self._input, self._output = inputs[0], outputs[0]
        self.frame_length = self._check_shape(self._input, "input")
        if self._check_shape(self._output, "output") != self.frame_length:
            raise ModelError(f"model {self.model_path} output frame length differs from its "
                             f"input: {list(self._output['shape_signature'])} vs "
                             f"{list(self._input['shape_signature'])}")
        self._batch = int(self._input["shape"][0])

    def _check_shape(self, detail: dict, what: str) -> int:
        shape = [int(d) for d in detail["shape_signature"]]
        if len(shape) != 3 or shape[2] != 1 or shape[1] < 1 or detail["dtype"] != np.float32:
            raise ModelError(f"model {self.model_path} {what} must be [batch, frame, 1] float32, "
                             f"found {shape} {np.dtype(detail['dtype']).name}")
        return shape[1]

    def run(self, frames: np.ndarray) -> np.ndarray:
        """Run ``frames`` (``[n, frame_length]`` float32) in one invoke.

        Returns ``[n, frame_length]`` float32.
        """
        n = frames.shape[0]
        if n != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], [n, self.frame_length, 1])
            self._interpreter.allocate_tensors()
            self._batch = n
        self._interpreter.set_tensor(self._input["index"],
                                     frames.reshape(n, self.frame_length, 1))
        self._interpreter.invoke()
        # get_tensor returns a copy, so the result outlives the next invoke.
        return self._interpreter.get_tensor(self._output["index"]).reshape(n, self.frame_length)


class StreamStepRunner:
    """Run a model's stream step twin: a stream's next frames and its state in, the enhanced
    frames and the state after them out (see :mod:`enhancer.model.card`).

    Parameters
    ----------
    model_path : str or Path
        The step's ``.tflite`` file: inputs ``[n, frame_length, 1]`` and ``[1, state_size]``,
        outputs the same, all float32.
    frame_length, state_size : int, optional
        What the model card says; the model must agree. None: what the model has.
    num_threads : int
        Interpreter threads.

    Raises
    ------
    ModelError
        The file is missing or unreadable, or its tensors are not as above.
    """

    def __init__(self, model_path: str | Path, frame_length: int | None = None,
                 state_size: int | None = None, num_threads: int = 1) -> None:
        self.model_path = Path(model_path)
        self._interpreter = load_interpreter(self.model_path, num_threads, "stream step model")
        # Told apart by rank: frames are [n, frame, 1], the state [1, size].
        inputs = {len(d["shape_signature"]): d for d in self._interpreter.get_input_details()}
        outputs = {len(d["shape_signature"]): d for d in self._interpreter.get_output_details()}
        # Not given: what the graph has (0 if it has no such input; refused below).
        if frame_length is None:
            frame_length = int(inputs[3]["shape_signature"][1]) if 3 in inputs else 0
        if state_size is None:
            state_size = int(inputs[2]["shape_signature"][1]) if 2 in inputs else 0
        self.frame_length, self.state_size = frame_length, state_size
        expected = {3: [self.frame_length, 1], 2: [self.state_size]}
        for what, details in (("inputs", inputs), ("outputs", outputs)):
            found = {rank: [int(n) for n in d["shape_signature"][1:]]
                     for rank, d in details.items()}
            if found != expected or len(details) != 2 or any(
                    d["dtype"] != np.float32 for d in details.values()):
                raise ModelError(
                    f"stream step model {self.model_path} {what} must be [n, "
                    f"{self.frame_length}, 1] and [1, {self.state_size}] float32, found "
                    f"{[list(d['shape_signature']) for d in details.values()]}")
        self._frames_in, self._state_in = inputs[3]["index"], inputs[2]["index"]
        self._frames_out, self._state_out = outputs[3]["index"], outputs[2]["index"]
        self._batch = int(inputs[3]["shape"][0])

    def run(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run ``frames`` (``[n, frame_length]``) from ``state`` (``state_size`` floats).

        Returns the ``[n, frame_length]`` enhanced frames and the state after them.
        """
        n = frames.shape[0]
        if n != self._batch:
            self._interpreter.resize_tensor_input(self._frames_in, [n, self.frame_length, 1])
            self._interpreter.allocate_tensors()
            self._batch = n
        self._interpreter.set_tensor(self._frames_in, frames.reshape(n, self.frame_length, 1))
        self._interpreter.set_tensor(self._state_in, state.reshape(1, self.state_size))
        self._interpreter.invoke()
        return (self._interpreter.get_tensor(self._frames_out).reshape(n, self.frame_length),
                self._interpreter.get_tensor(self._state_out).reshape(self.state_size))


class StepFrameRunner:
    """A stream step graph as the pipeline's frame model (``run(frames)``, each call from a
    zero state): what a chained model's file gives the pipeline (its frame, and its speed
    measured), as its files run through the step."""

    def __init__(self, step: StreamStepRunner) -> None:
        self.step = step
        self.frame_length = step.frame_length
        self._zero = np.zeros(step.state_size, np.float32)

    def run(self, frames: np.ndarray) -> np.ndarray:
        return self.step.run(frames, self._zero)[0]

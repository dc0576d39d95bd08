"""Model cards: what a model needs from the pipeline, in a JSON file beside the ``.tflite``.

``models/denoiser_48k.json`` describes ``models/denoiser_48k.tflite``: its sample rate, frame,
hop and window, a description, and how it was made. A model without a card runs at the
configured rate on consecutive frames. A model with look-back may name a *stream step* twin
(``stream_step``: its file and the size of its state), which streams run one chunk at a time,
their state in and out of each call, instead of sending the look-back's frames again. A
recurrent model that starts its state afresh on a grid of cells (``grid_frames``) has every
file segment start on that grid, and needs a stream step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enhancer.audio.formats import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from enhancer.errors import ModelError
from enhancer.model.framing import Framing


@dataclass(frozen=True)
class ModelCard:
    """The pipeline's view of one model."""

    name: str
    model_path: Path
    sample_rate: int
    frame_length: int | None = None  # None: read from the model only
    hop_length: int | None = None  # None: the model's frame length
    window: str = "none"
    context_frames: int = 0  # frames of look-back the model sees before each frame
    description: str = ""
    stream_step_path: Path | None = None  # the stream step twin, if any
    stream_state_size: int = 0  # floats of its state
    # Files are cut on a grid of cells this many frames long (0: anywhere): a recurrent model
    # starts each cell from a zero state, so its output depends on where a block starts.
    grid_frames: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def card_path(self) -> Path:
        return card_path_for(self.model_path)


def card_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def load_card(model_path: str | Path, default_sample_rate: int) -> ModelCard:
    """Read the card beside ``model_path``; without one, describe a plain consecutive-frame model.

    Raises
    ------
    ModelError
        The card is not valid JSON or a field is missing or wrong; the message names the card
        and the field.
    """
    model_path = Path(model_path)
    path = card_path_for(model_path)
    if not path.is_file():
        return ModelCard(model_path.stem, model_path, default_sample_rate)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model card {path} must hold a JSON object")

    def get(name: str, kind: type, default: Any = ...) -> Any:
        if name not in data:
            if default is ...:
                raise ModelError(f"model card {path}: '{name}' is missing")
            return default
        value = data[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ModelError(f"model card {path}: '{name}' must be an integer, got {value!r}")
        if not isinstance(value, kind):
            raise ModelError(f"model card {path}: '{name}' must be a {kind.__name__}, "
                             f"got {value!r}")
        return value

    rate = get("sample_rate", int)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ModelError(f"model card {path}: 'sample_rate' must be {MIN_SAMPLE_RATE}-"
                         f"{MAX_SAMPLE_RATE} Hz, got {rate}")
    hop = get("hop_length", int, None)
    if hop is not None and hop < 1:
        raise ModelError(f"model card {path}: 'hop_length' must be positive, got {hop}")
    window = get("window", str, "none")  # checked with the hop by framing_for
    context = get("context_frames", int, 0)
    if not 0 <= context <= 1024:
        raise ModelError(f"model card {path}: 'context_frames' must be 0-1024, got {context}")
    step = get("stream_step", dict, None)
    step_path, state_size = None, 0
    if step is not None:
        name, state_size = step.get("model"), step.get("state_size")
        if not isinstance(name, str) or Path(name).name != name:
            raise ModelError(f"model card {path}: 'stream_step.model' must be a file name "
                             f"beside the card, got {name!r}")
        if (isinstance(state_size, bool) or not isinstance(state_size, int)
                or not 0 < state_size <= 1 << 20):
            raise ModelError(f"model card {path}: 'stream_step.state_size' must be 1-"
                             f"{1 << 20}, got {state_size!r}")
        step_path = path.parent / name
        if not step_path.is_file():
            raise ModelError(f"model card {path}: 'stream_step.model' {step_path} is missing")
    grid = get("grid_frames", int, 0)
    if not 0 <= grid <= 4096:
        raise ModelError(f"model card {path}: 'grid_frames' must be 0-4096, got {grid}")
    if grid and step_path is None:
        # A stream's chunks do not start on the grid: only a stream step can match the cells.
        raise ModelError(f"model card {path}: a model with 'grid_frames' needs a "
                         f"'stream_step'")
    known = {"name", "sample_rate", "frame_length", "hop_length", "window", "context_frames",
             "description", "stream_step", "grid_frames"}
    return ModelCard(get("name", str, model_path.stem), model_path, rate,
                     get("frame_length", int, None), hop, window, context,
                     get("description", str, ""), step_path, state_size, grid,
                     {k: v for k, v in data.items() if k not in known})


def framing_for(card: ModelCard, frame_length: int) -> Framing:
    """The framing the card asks for, checked against the model's real frame length."""
    if card.frame_length is not None and card.frame_length != frame_length:
        raise ModelError(f"model card {card.card_path}: 'frame_length' is {card.frame_length} "
                         f"but the model's input frame is {frame_length}")
    try:
        return Framing(frame_length, card.hop_length, card.window, card.context_frames,
                       card.grid_frames)
    except ValueError as exc:
        raise ModelError(f"model card {card.card_path}: {exc}") from None

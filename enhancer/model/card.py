"""Model cards: what a model needs from the pipeline, in a JSON file beside the ``.tflite``.

``models/denoiser_48k.json`` describes ``models/denoiser_48k.tflite``: its sample rate, frame,
hop and window, a description, and how it was made. A model without a card runs at the
configured rate on consecutive frames. A model with look-back may name a *stream step* twin
(``stream_step``: its file and the size of its state), which streams run one chunk at a time,
their state in and out of each call, instead of sending the look-back's frames again. A
recurrent model that starts its state afresh on a grid of cells (``grid_frames``) has every
file segment start on that grid, and needs a stream step. A model whose state must run
through a whole file (``chained``: the denoiser's and DeepFilterNet3's) runs files, too, as a
chain of stream steps, one worker a channel at a time (its look-back frames, if any, only in
front of the first); ``latency_samples`` is the delay its output has, which the pipeline
removes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError, PydanticKnownError

from enhancer.audio.formats import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from enhancer.errors import ModelError
from enhancer.model.framing import Framing

MAX_CONTEXT_FRAMES = 1024
MAX_GRID_FRAMES = 4096
MAX_STATE_SIZE = 1 << 20
MAX_LATENCY_SAMPLES = 1 << 16

# A stream step's two fields each have one rule, said whatever is wrong (missing, wrong type
# or out of range).
_STEP_RULES = {"stream_step.model": "a file name beside the card",
               "stream_step.state_size": f"1-{MAX_STATE_SIZE}"}


def _within(low: int, high: int | None = None, unit: str = "") -> AfterValidator:
    """An integer field's range, refused in the card's words: "must be 0-1024, got -1"."""
    span = "positive" if high is None else f"{low}-{high}{unit}"

    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            raise PydanticCustomError("card_range", "must be {span}, got {value}",
                                      {"span": span, "value": repr(value)})
        return value

    return AfterValidator(check)


def _file_name(value: str) -> str:
    if Path(value).name != value:
        raise PydanticCustomError("card_file_name", "must be {rule}, got {value}",
                                  {"rule": _STEP_RULES["stream_step.model"],
                                   "value": repr(value)})
    return value


class StreamStep(BaseModel):
    """A card's ``stream_step``: the twin's file, beside the card, and its state's size."""

    model_config = ConfigDict(frozen=True)

    model: Annotated[StrictStr, AfterValidator(_file_name)]
    state_size: Annotated[StrictInt, _within(1, MAX_STATE_SIZE)]


class ModelCard(BaseModel):
    """The pipeline's view of one model: its card's fields (in the order they are checked),
    where the model is, and whatever else the card holds (``details``)."""

    model_config = ConfigDict(frozen=True)

    model_path: Path
    sample_rate: Annotated[StrictInt, _within(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, " Hz")]
    hop_length: Annotated[StrictInt, _within(1)] | None = None  # None: the frame length
    window: StrictStr = "none"  # checked with the hop by framing_for
    # Frames of look-back the model sees before each frame.
    context_frames: Annotated[StrictInt, _within(0, MAX_CONTEXT_FRAMES)] = 0
    stream_step: StreamStep | None = None  # the stream step twin, if any
    # Files are cut on a grid of cells this many frames long (0: anywhere): a recurrent model
    # starts each cell from a zero state, so its output depends on where a block starts.
    grid_frames: Annotated[StrictInt, _within(0, MAX_GRID_FRAMES)] = 0
    # Files run as one chain of stream steps: the state never restarts (needs a stream step).
    chained: StrictBool = False
    # Output sample n is input sample n - latency_samples (at the model's rate).
    latency_samples: Annotated[StrictInt, _within(0, MAX_LATENCY_SAMPLES)] = 0
    name: StrictStr
    frame_length: StrictInt | None = None  # None: read from the model only
    description: StrictStr = ""
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("hop_length", "frame_length", "stream_step", mode="before")
    @classmethod
    def _null_is_not_left_out(cls, value: Any, info: ValidationInfo) -> Any:
        """A field left out takes its default; ``null`` is refused as the wrong type."""
        if value is None:
            if info.field_name == "stream_step":
                raise PydanticKnownError("model_type", {"class_name": "StreamStep"})
            raise PydanticKnownError("int_type")
        return value

    @model_validator(mode="after")
    def _stream_step_fits(self) -> ModelCard:
        if self.stream_step_path is not None and not self.stream_step_path.is_file():
            raise PydanticCustomError("card_step_missing",
                                      "'stream_step.model' {path} is missing",
                                      {"path": str(self.stream_step_path)})
        if self.grid_frames and self.stream_step is None:
            # A stream's chunks do not start on the grid: only a stream step can match the cells.
            raise PydanticCustomError("card_grid_without_step",
                                      "a model with 'grid_frames' needs a 'stream_step'")
        if self.chained and self.stream_step is None:
            raise PydanticCustomError("card_chain_without_step",
                                      "a 'chained' model needs a 'stream_step'")
        if self.chained and self.grid_frames:
            raise PydanticCustomError("card_chain_grid",
                                      "a 'chained' model has no 'grid_frames': its state "
                                      "never restarts")
        if self.latency_samples and self.window != "none":
            raise PydanticCustomError("card_latency_overlap",
                                      "'latency_samples' needs consecutive frames (window "
                                      "'none')")
        return self

    @property
    def card_path(self) -> Path:
        return card_path_for(self.model_path)

    @property
    def stream_step_path(self) -> Path | None:
        """The stream step twin's file, beside the card; None without one."""
        return None if self.stream_step is None else self.card_path.parent / self.stream_step.model

    @property
    def stream_state_size(self) -> int:
        """Floats of the stream step's state (0 without one)."""
        return 0 if self.stream_step is None else self.stream_step.state_size


# The fields a card's JSON may give; anything else it holds goes to ``details``.
CARD_FIELDS = frozenset(ModelCard.model_fields) - {"model_path", "details"}


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
        return ModelCard(name=model_path.stem, model_path=model_path,
                         sample_rate=default_sample_rate)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model card {path} must hold a JSON object")
    fields = {"name": model_path.stem, **{k: v for k, v in data.items() if k in CARD_FIELDS}}
    details = {k: v for k, v in data.items() if k not in CARD_FIELDS}
    try:
        return ModelCard.model_validate({**fields, "model_path": model_path, "details": details})
    except ValidationError as exc:
        raise ModelError(f"model card {path}: {_refusal(exc.errors()[0])}") from None


def _refusal(error: ErrorDetails) -> str:
    """What is wrong with the card, naming the field: "'hop_length' must be positive, got 0"."""
    where = ".".join(str(part) for part in error["loc"])
    if not where:  # the card as a whole: the message names its fields
        return error["msg"]
    value = None if error["type"] == "missing" else error["input"]
    if where in _STEP_RULES:
        return f"'{where}' must be {_STEP_RULES[where]}, got {value!r}"
    match error["type"]:
        case "missing":
            return f"'{where}' is missing"
        case "int_type":
            return f"'{where}' must be an integer, got {value!r}"
        case "string_type":
            return f"'{where}' must be a str, got {value!r}"
        case "model_type":
            return f"'{where}' must be a dict, got {value!r}"
        case "bool_type":
            return f"'{where}' must be true or false, got {value!r}"
    return f"'{where}' {error['msg']}"


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

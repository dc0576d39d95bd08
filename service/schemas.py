"""What the API sends and answers: pydantic models, the response tables, the error statuses."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from enhancer.audio.formats import MEDIA_TYPES, RAW_FORMATS
from enhancer.errors import (
    EnhancerClosed,
    EnhancerError,
    InvalidAudio,
    ModelError,
    Overloaded,
    PoolBroken,
    TooLarge,
    UnknownModel,
    UnsupportedFormat,
    WorkerCrashed,
)

# Library errors → HTTP status; the library itself knows nothing of HTTP. The first match in
# order wins, so subclasses come before their bases.
ERROR_STATUS: dict[type[EnhancerError], int] = {
    TooLarge: 413,
    UnsupportedFormat: 415,
    UnknownModel: 404,
    InvalidAudio: 422,
    WorkerCrashed: 503,
    PoolBroken: 503,
    Overloaded: 503,
    EnhancerClosed: 503,
    ModelError: 500,
}
# Statuses that invite the client to try again shortly.
RETRY_AFTER_S = {503: 1}


def status_for(error: EnhancerError) -> int:
    return next((code for kind, code in ERROR_STATUS.items() if isinstance(error, kind)), 500)


class RawFormat(StrEnum):
    """The encodings of headerless audio, an enum so Swagger offers a choice."""

    f32le = "f32le"
    s16le = "s16le"


assert set(RawFormat) == set(RAW_FORMATS), "RawFormat must list every raw format"


class ErrorMessage(BaseModel):
    """Every error response: what was wrong, in words."""

    detail: str


class Health(BaseModel):
    status: str


class ModelInfo(BaseModel):
    name: str
    sample_rate: int
    frame_length: int
    hop_length: int
    window: str
    latency_ms: float = Field(description="a stream's delay: one frame and the model's "
                                          "look-ahead")
    description: str
    default: bool


class Readiness(BaseModel):
    status: str
    workers: int
    frame_length: int
    model_sample_rate: int


def error(description: str) -> dict[str, Any]:
    return {"model": ErrorMessage, "description": description}


AUDIO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The enhanced audio, in the format, rate, channels and length sent.",
        "content": {media: {"schema": {"type": "string", "format": "binary"}}
                    for media in sorted(set(MEDIA_TYPES.values()))},
        "headers": {
            "Content-Disposition": {
                "description": "`attachment; filename=\"enhanced_NAME\"`, where NAME is the "
                               "uploaded file's name",
                "schema": {"type": "string"}},
            "X-Sample-Rate": {"description": "sample rate in Hz", "schema": {"type": "integer"}},
            "X-Sample-Count": {"description": "samples per channel",
                               "schema": {"type": "integer"}},
            "X-Channels": {"description": "channel count", "schema": {"type": "integer"}},
            "X-Processing-Time": {"description": "seconds spent enhancing",
                                  "schema": {"type": "number"}},
            "X-Clipped-Samples": {"description": "samples saturated to the integer range "
                                                 "(integer formats only)",
                                  "schema": {"type": "integer"}},
        },
    },
    400: error("The body is not valid multipart/form-data."),
    401: error("X-API-Key is missing or wrong (only when the service has an API key)."),
    404: error("The model named in `model` does not exist; the detail lists those that do."),
    413: error("The upload is larger than MAX_UPLOAD_MB."),
    415: error("The audio format is not supported."),
    422: error("The audio or a form field is invalid: empty, truncated, NaN/Inf samples, "
               "a byte count that does not fit the encoding, or a missing or out-of-range "
               "sample rate."),
    503: error("Too many requests are waiting (retry after Retry-After seconds), or a worker "
               "died while holding this request."),
    504: error("The request took longer than REQUEST_TIMEOUT_S."),
}

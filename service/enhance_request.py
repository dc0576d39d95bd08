"""What ``POST /enhance`` is asked: its options and where its audio is, parsed once.

The audio comes either as the ``file`` field of a multipart form, with the options as the
form's other fields, or as the raw request body, with the options in the query string. The
options are one pydantic model, :class:`AudioOptions`, read from whichever of the two the
request uses; :func:`parse_enhance_request` is the route's dependency. Nothing is ignored:
an option in the other place, an unknown name or one given twice is refused (422), and
numbers are read strictly (:func:`strict_int`, :func:`strict_float`).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, File, Form, HTTPException, Query, Request, UploadFile
from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from enhancer.audio.formats import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, SUPPORTED_FORMATS_TEXT
from enhancer.model.attenuation import MAX_ATTEN_LIM_DB
from service.schemas import RawFormat

# The Content-Types of a raw (not multipart) upload.
RAW_BODY_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/flac",
                            "audio/x-flac", "audio/mpeg", "audio/ogg",
                            "application/octet-stream"})
# The raw body's types in the OpenAPI schema, beside the multipart form FastAPI describes.
RAW_BODY_OPENAPI: dict[str, Any] = {"requestBody": {"content": {
    media: {"schema": {"type": "string", "format": "binary"}}
    for media in sorted(RAW_BODY_TYPES)}}}
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

# ASCII only: int() and float() also take "1_6000", " 16000 " and other scripts' digits.
_INTEGER = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")


def strict_int(text: str) -> int:
    """A whole number written in ASCII digits and nothing else; ValueError otherwise."""
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"must be a whole number in ASCII digits, got {text[:40]!r}")
    return int(text)


def strict_float(text: str) -> float:
    """A decimal number in ASCII (``6``, ``-1.5``, ``2e1``; no ``inf``, ``nan``, spaces or
    underscores); ValueError otherwise."""
    if len(text) > 40 or not _DECIMAL.fullmatch(text):
        raise ValueError(f"must be a decimal number in ASCII, got {text[:40]!r}")
    return float(text)


class AudioOptions(BaseModel):
    """How to read the audio and how to enhance it: the form's fields beside ``file``, or
    the query's parameters when the audio is the raw body."""

    sample_rate: Annotated[int | None, Field(
        ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE,
        description="Sample rate of headerless audio, Hz. Containers carry their own.",
        examples=[48000])] = None
    format: Annotated[RawFormat, Field(
        description=f"Encoding of headerless audio (float32 or int16, little-endian); "
                    f"containers carry their own. Supported: {SUPPORTED_FORMATS_TEXT}.")
    ] = RawFormat.f32le
    model: Annotated[str | None, Field(
        description="Which model to use (see `GET /models`); the default model if "
                    "omitted.")] = None
    atten_lim_db: Annotated[float | None, Field(
        ge=0, le=MAX_ATTEN_LIM_DB,
        description="Strength: the most the result may attenuate anything, in dB (the "
                    "original is mixed back in, as DeepFilterNet's option of the same name "
                    "does); omitted: no limit.")] = None

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _ascii_integer(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return strict_int(value)
        except ValueError:
            raise PydanticCustomError("int_parsing", "Input should be a valid integer, in "
                                      "ASCII digits only, got {text!r}",
                                      {"text": value[:40]}) from None

    @field_validator("atten_lim_db", mode="before")
    @classmethod
    def _ascii_decimal(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return strict_float(value)
        except ValueError:
            raise PydanticCustomError("float_parsing", "Input should be a valid number, in "
                                      "ASCII digits, got {text!r}", {"text": value[:40]}
                                      ) from None


class EnhanceForm(AudioOptions):
    """The multipart form: the audio and its options."""

    # Optional here only because the audio may come as the raw body instead; the OpenAPI
    # schema marks it required (service.app), and a form without it is refused (422).
    file: Annotated[UploadFile | None, File(
        description="The audio: WAV, FLAC, MP3, Ogg, or headerless samples in `format`.",
        # format: binary is what makes Swagger UI show a file picker.
        json_schema_extra={"format": "binary"})] = None


@dataclass(frozen=True)
class EnhanceRequest:
    """A parsed ``POST /enhance``: its options, and where to read its audio from."""

    options: AudioOptions
    request: Request
    file: UploadFile | None  # None: the audio is the raw body

    async def read_audio(self) -> tuple[bytes, str | None]:
        """The audio's bytes, and the uploaded file's name if it has one.

        Read here, not by the dependency, so that the caller holds the only reference and
        can let the bytes go once they are decoded."""
        if self.file is not None:
            return await self.file.read(), self.file.filename
        chunks = [chunk async for chunk in self.request.stream()]
        # Joined in a thread: copying a large body here would stall every live stream.
        return await asyncio.to_thread(b"".join, chunks), None


async def parse_enhance_request(
        request: Request,
        form: Annotated[EnhanceForm, Form(media_type="multipart/form-data")],
        query: Annotated[AudioOptions, Query()]) -> EnhanceRequest:
    """The route's dependency: :func:`read_enhance_request`."""
    return await read_enhance_request(request, form, query)


async def read_enhance_request(request: Request, form: EnhanceForm,
                               query: AudioOptions) -> EnhanceRequest:
    """The options from the form or, with the audio as the raw body, from the query; 415 for
    a body of another type, 422 for a form without ``file`` or for a parameter that would be
    ignored (in the other place, unknown, or repeated). The names allowed are the fields of
    ``form``'s and ``query``'s models, so a route with more options (``POST /jobs``) passes
    its own subclasses."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in RAW_BODY_TYPES:
        _check_names(request.query_params.multi_items(), type(query).model_fields,
                     "query parameter")
        return EnhanceRequest(query, request, file=None)
    if form.file is None:
        if content_type in FORM_TYPES:
            raise HTTPException(422, "file: Field required")
        raise HTTPException(415, f"send the audio as the `file` field of multipart/form-data, "
                                 f"or as the body with Content-Type one of "
                                 f"{', '.join(sorted(RAW_BODY_TYPES))}; got "
                                 f"{content_type or 'no Content-Type'}")
    if request.query_params:
        name = next(iter(request.query_params))
        raise HTTPException(422, f"query parameter {name!r}: with a form upload the options "
                                 f"are form fields beside `file`, not query parameters")
    _check_names((await request.form()).multi_items(), type(form).model_fields, "form field")
    return EnhanceRequest(form, request, form.file)


def _check_names(items: Iterable[tuple[str, Any]], known: Collection[str], kind: str) -> None:
    """422 for a name that is not an option, or one given more than once."""
    for name, count in Counter(name for name, _ in items).items():
        if name not in known:
            raise HTTPException(422, f"unknown {kind} {name!r}; the {kind}s are "
                                     f"{', '.join(known)}")
        if count > 1:
            raise HTTPException(422, f"{kind} {name!r} is given {count} times; give it once")


EnhanceRequestDep = Annotated[EnhanceRequest, Depends(parse_enhance_request)]

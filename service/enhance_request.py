"""What ``POST /enhance`` is asked: its options and where its audio is, parsed once.

The audio comes either as the ``file`` field of a multipart form, with the options as the
form's other fields, or as the raw request body, with the options in the query string. The
options are one pydantic model, :class:`AudioOptions`, read from whichever of the two the
request uses; :func:`parse_enhance_request` is the route's dependency.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, File, Form, HTTPException, Query, Request, UploadFile
from pydantic import BaseModel, Field

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
    """The options from the form or, with the audio as the raw body, from the query; 415 for
    a body of another type, 422 for a form without ``file``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in RAW_BODY_TYPES:
        return EnhanceRequest(query, request, file=None)
    if form.file is None:
        if content_type in FORM_TYPES:
            raise HTTPException(422, "file: Field required")
        raise HTTPException(415, f"send the audio as the `file` field of multipart/form-data, "
                                 f"or as the body with Content-Type one of "
                                 f"{', '.join(sorted(RAW_BODY_TYPES))}; got "
                                 f"{content_type or 'no Content-Type'}")
    return EnhanceRequest(form, request, form.file)


EnhanceRequestDep = Annotated[EnhanceRequest, Depends(parse_enhance_request)]

"""The service's routes: ``/enhance`` (guarded by the API key when one is set) and the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from enhancer.audio.decode import open_memory, read_decoded
from enhancer.audio.encode import encode_audio_view
from enhancer.audio.formats import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    SUPPORTED_FORMATS_TEXT,
    decoded_samples,
)
from enhancer.model.attenuation import MAX_ATTEN_LIM_DB
from service.deps import MetricsDep, ModelsDep, SettingsDep
from service.middleware import InflightMemory
from service.schemas import AUDIO_RESPONSE, Health, ModelInfo, RawFormat, Readiness, error

STATIC_DIR = Path(__file__).resolve().parent / "static"


def operation_id(route: APIRoute) -> str:
    """Operation IDs are the function names (``enhance``, ``list_models``...)."""
    return route.name


# Behind the API key when one is set.
keyed_router = APIRouter(generate_unique_id_function=operation_id)
router = APIRouter(generate_unique_id_function=operation_id)


# Longest download name offered, in characters (the extension is kept).
MAX_FILENAME = 120


def content_disposition(filename: str | None) -> str:
    """``attachment`` with the upload's name: control characters dropped, length capped."""
    base = "".join(c for c in Path(filename or "audio").name
                   if c.isprintable() and c not in "\r\n") or "audio"
    stem, dot, suffix = base.rpartition(".")
    if not dot or len(suffix) > 10:
        stem, suffix = base, ""
    name = f"enhanced_{stem[:MAX_FILENAME]}{'.' + suffix if suffix else ''}"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


# What a request holds while it is enhanced, per sample at the larger of its rate and the
# model's: the decoded audio, the resampled channels, the model's output and the encoded
# answer (measured: 14-16 bytes).
WORKING_BYTES_PER_SAMPLE = 16


def working_memory(frames: int, channels: int, sample_rate: int, model_rate: int) -> int:
    """Bytes a request of this size holds while it is enhanced."""
    return WORKING_BYTES_PER_SAMPLE * decoded_samples(frames, channels, sample_rate, model_rate)


# Answers larger than this are streamed in pieces of this size.
STREAM_RESPONSE_BYTES = 1 << 20
# The Content-Types of a raw (not multipart) upload.
RAW_BODY_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/flac",
                            "audio/x-flac", "audio/mpeg", "audio/ogg",
                            "application/octet-stream"})
RAW_BODY_OPENAPI = {"requestBody": {"content": {
    media: {"schema": {"type": "string", "format": "binary"}}
    for media in sorted(RAW_BODY_TYPES)}}}



@keyed_router.post("/enhance", response_class=Response, responses=AUDIO_RESPONSE,
                   tags=["enhance"], summary="Enhance an audio file",
                   openapi_extra=RAW_BODY_OPENAPI)
async def enhance(
    request: Request,
    models: ModelsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    file: Annotated[UploadFile | None, File(
        description="The audio: WAV, FLAC, MP3, Ogg, or headerless samples in `format`.",
        # format: binary is what makes Swagger UI show a file picker.
        json_schema_extra={"format": "binary"})] = None,
    sample_rate: Annotated[int | None, Form(
        ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE,
        description="Sample rate of headerless audio, Hz. Containers carry their own.",
        json_schema_extra={"examples": [48000]})] = None,
    format: Annotated[RawFormat, Form(
        description=f"Encoding of headerless audio (float32 or int16, little-endian); "
                    f"containers carry their own. Supported: {SUPPORTED_FORMATS_TEXT}.")
    ] = RawFormat.f32le,
    model: Annotated[str | None, Form(
        description="Which model to use (see `GET /models`); the default model if "
                    "omitted.")] = None,
    atten_lim_db: Annotated[float | None, Form(
        ge=0, le=MAX_ATTEN_LIM_DB,
        description="Strength: the most the result may attenuate anything, in dB (the "
                    "original is mixed back in, as DeepFilterNet's option of the same name "
                    "does); omitted: no limit.")] = None,
    raw_sample_rate: Annotated[int | None, Query(
        alias="sample_rate", ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE,
        description="With the audio as the raw body: the rate of headerless audio.")] = None,
    raw_format: Annotated[RawFormat | None, Query(
        alias="format", description="With the audio as the raw body: the encoding of "
                                    "headerless audio.")] = None,
    raw_model: Annotated[str | None, Query(
        alias="model", description="With the audio as the raw body: which model.")] = None,
    raw_atten_lim_db: Annotated[float | None, Query(
        alias="atten_lim_db", ge=0, le=MAX_ATTEN_LIM_DB,
        description="With the audio as the raw body: the strength limit, dB.")] = None,
) -> Response:
    """Return the enhanced audio in the format, sample rate, channels and length sent.

    Send the audio either as the `file` field of a multipart form (browsers, this page), or
    as the raw request body with `Content-Type: audio/wav` (`audio/flac`, `audio/mpeg`,
    `audio/ogg`, or `application/octet-stream` for headerless samples, with `sample_rate`
    and `format` in the query), which is read straight from memory.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in RAW_BODY_TYPES:
        # Joined in a thread: copying a large body here would stall every live stream.
        chunks = [chunk async for chunk in request.stream()]
        data, filename = await asyncio.to_thread(b"".join, chunks), None
        del chunks
        sample_rate, format, model = raw_sample_rate, raw_format or format, raw_model or model
        atten_lim_db = raw_atten_lim_db
    elif file is None:
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise HTTPException(422, "file: Field required")
        raise HTTPException(415, f"send the audio as the `file` field of multipart/form-data, "
                                 f"or as the body with Content-Type one of "
                                 f"{', '.join(sorted(RAW_BODY_TYPES))}; got "
                                 f"{content_type or 'no Content-Type'}")
    else:
        data, filename = await file.read(), file.filename
    enhancer = models.get(model)
    model_rate = enhancer.model_sample_rate
    # The header first: a request over the budget is refused before anything is decoded, and
    # one that would not fit in the memory left waits for nothing (503). The header is read
    # once: the same reader then decodes.
    reader = await asyncio.to_thread(open_memory, data, format.value, sample_rate)
    memory: InflightMemory = request.app.state.memory
    held = 0
    try:
        with reader:
            info = reader.info
            settings.budget.check(info, model_rate)
            if info.frames is not None:
                amount = working_memory(info.frames, info.channels, info.sample_rate,
                                        model_rate)
                memory.reserve(amount)
                held = amount
            audio = await asyncio.to_thread(read_decoded, reader, settings.budget, model_rate)
        del data
        if info.frames is None:  # a stream of unknown length: its size is known now
            amount = working_memory(audio.samples.shape[0], audio.channels,
                                    audio.sample_rate, model_rate)
            memory.reserve(amount)
            held = amount
        started = time.perf_counter()
        try:
            enhanced = await enhancer.enhance_async(audio.samples, audio.sample_rate,
                                                    timeout=settings.REQUEST_TIMEOUT_S,
                                                    atten_lim_db=atten_lim_db)
        except TimeoutError:
            raise HTTPException(504, f"enhancing took longer than "
                                     f"{settings.REQUEST_TIMEOUT_S:g} s") from None
        elapsed = time.perf_counter() - started
        encoded, clipped = await asyncio.to_thread(encode_audio_view, enhanced,
                                                   audio.sample_rate, audio.format)
        del enhanced
    finally:
        memory.release(held)
    metrics.audio_seconds.inc(audio.samples.size / audio.sample_rate)
    headers = {
        "Content-Disposition": content_disposition(filename),
        "X-Sample-Rate": str(audio.sample_rate),
        "X-Sample-Count": str(audio.samples.shape[0]),
        "X-Channels": str(audio.channels),
        "X-Processing-Time": f"{elapsed:.6f}",
        "X-Clipped-Samples": str(clipped),
    }
    if len(encoded) <= STREAM_RESPONSE_BYTES:
        return Response(bytes(encoded), media_type=audio.format.media_type, headers=headers)
    # Long audio goes out in pieces, so the send buffer (and a slow reader) holds one at a time.
    headers["Content-Length"] = str(len(encoded))
    return StreamingResponse(_pieces(encoded), media_type=audio.format.media_type,
                             headers=headers)


async def _pieces(encoded: memoryview) -> AsyncIterator[bytes]:
    for start in range(0, len(encoded), STREAM_RESPONSE_BYTES):
        yield bytes(encoded[start:start + STREAM_RESPONSE_BYTES])


@router.get("/models", response_model=list[ModelInfo], tags=["models"],
            summary="The models served")
async def list_models(models: ModelsDep) -> list[ModelInfo]:
    return [ModelInfo(**info) for info in models.describe()]


@router.get("/health", response_model=Health, tags=["operations"],
            summary="The process is alive")
async def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, tags=["operations"],
            summary="The model and every worker are up",
            responses={503: error("The model is not loaded or a worker is down.")})
async def ready(models: ModelsDep) -> Readiness | JSONResponse:
    if not models.is_ready:
        return JSONResponse({"detail": "the worker pool is not ready"}, status_code=503)
    return Readiness(status="ready", workers=models.worker_count,
                     frame_length=models.default.frame_length,
                     model_sample_rate=models.default.model_sample_rate)


@keyed_router.get("/metrics", response_class=Response, tags=["operations"],
            summary="Prometheus metrics",
            responses={200: {"description": "Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(models: ModelsDep, metrics: MetricsDep) -> Response:
    metrics.worker_restarts.set(models.worker_restarts)
    metrics.pool_sessions.set(models.pending_sessions)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The page to try the service in a browser."""
    return FileResponse(STATIC_DIR / "index.html")


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} - Swagger UI",
        swagger_js_url="/static/swagger/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger/swagger-ui.css",
        swagger_favicon_url="/static/swagger/favicon-32x32.png",
        # Forms open ready to fill: pick a file, press Execute, download the result.
        swagger_ui_parameters={"tryItOutEnabled": True})

"""The service's routes: ``/enhance`` (guarded by the API key when one is set) and the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, HTTPException, Request
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
from enhancer.audio.formats import Budget, DecodedAudio
from enhancer.audio_enhancer import AudioEnhancer
from service.deps import MemoryDep, MetricsDep, ModelsDep, SettingsDep
from service.enhance_request import RAW_BODY_OPENAPI, AudioOptions, EnhanceRequestDep
from service.memory import Reservation, working_memory
from service.schemas import AUDIO_RESPONSE, Health, ModelInfo, Readiness, error

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


# Answers larger than this are streamed in pieces of this size.
STREAM_RESPONSE_BYTES = 1 << 20


@keyed_router.post("/enhance", response_class=Response, responses=AUDIO_RESPONSE,
                   tags=["enhance"], summary="Enhance an audio file",
                   openapi_extra=RAW_BODY_OPENAPI)
async def enhance(asked: EnhanceRequestDep, models: ModelsDep, settings: SettingsDep,
                  memory: MemoryDep, metrics: MetricsDep) -> Response:
    """Return the enhanced audio in the format, sample rate, channels and length sent.

    Send the audio either as the `file` field of a multipart form (browsers, this page), or
    as the raw request body with `Content-Type: audio/wav` (`audio/flac`, `audio/mpeg`,
    `audio/ogg`, or `application/octet-stream` for headerless samples), which is read
    straight from memory; the options are then the query's parameters (`sample_rate`,
    `format`, `model`, `atten_lim_db`) instead of the form's fields.
    """
    data, filename = await asked.read_audio()
    enhancer = models.get(asked.options.model)
    with memory.reservation() as working:
        audio = await _decode_within_budget(data, asked.options, settings.budget,
                                            enhancer.model_sample_rate, working)
        del data  # decoded: the upload's bytes are not needed any more
        started = time.perf_counter()
        enhanced = await _enhance_in_time(enhancer, audio, asked.options.atten_lim_db,
                                          settings.REQUEST_TIMEOUT_S)
        elapsed = time.perf_counter() - started
        encoded, clipped = await asyncio.to_thread(encode_audio_view, enhanced,
                                                   audio.sample_rate, audio.format)
        del enhanced
    metrics.audio_seconds.inc(audio.samples.size / audio.sample_rate)
    return _answer(encoded, audio, filename, elapsed, clipped)


async def _decode_within_budget(data: bytes, options: AudioOptions, budget: Budget,
                                model_rate: int, working: Reservation) -> DecodedAudio:
    """The audio, decoded once it is known to fit: the budget (413) and the in-flight memory
    (503 when busy) are checked on the header, before anything is decoded; a stream of
    unknown length is sized, and held, once decoded. The reader that reads the header then
    decodes."""
    reader = await asyncio.to_thread(open_memory, data, options.format.value,
                                     options.sample_rate)
    with reader:
        info = reader.info
        budget.check(info, model_rate)
        if info.frames is not None:
            working.add(working_memory(info.frames, info.channels, info.sample_rate,
                                       model_rate))
        audio = await asyncio.to_thread(read_decoded, reader, budget, model_rate)
    if info.frames is None:  # a stream of unknown length: its size is known now
        working.add(working_memory(audio.samples.shape[0], audio.channels, audio.sample_rate,
                                   model_rate))
    return audio


async def _enhance_in_time(enhancer: AudioEnhancer, audio: DecodedAudio,
                           atten_lim_db: float | None, timeout: float) -> np.ndarray:
    """The enhanced samples, or 504 if they take longer than REQUEST_TIMEOUT_S."""
    try:
        return await enhancer.enhance_async(audio.samples, audio.sample_rate, timeout=timeout,
                                            atten_lim_db=atten_lim_db)
    except TimeoutError:
        raise HTTPException(504, f"enhancing took longer than {timeout:g} s") from None


def _answer(encoded: memoryview, audio: DecodedAudio, filename: str | None, elapsed: float,
            clipped: int) -> Response:
    """The enhanced audio, with the headers that describe it (``AUDIO_RESPONSE``)."""
    headers = {
        "Content-Disposition": content_disposition(filename),
        "X-Sample-Rate": str(audio.sample_rate),
        "X-Sample-Count": str(audio.samples.shape[0]),
        "X-Channels": str(audio.channels),
        "X-Processing-Time": f"{elapsed:.6f}",
        "X-Clipped-Samples": str(clipped),
    }
    media_type = audio.format.media_type
    if len(encoded) <= STREAM_RESPONSE_BYTES:
        return Response(bytes(encoded), media_type=media_type, headers=headers)
    # Long audio goes out in pieces, so the send buffer (and a slow reader) holds one at a time.
    headers["Content-Length"] = str(len(encoded))
    return StreamingResponse(_pieces(encoded), media_type=media_type, headers=headers)


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
    # In a thread: the jobs' figures are read from their database at each scrape.
    body = await asyncio.to_thread(generate_latest, metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


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

"""The service's routes: ``/enhance`` (guarded by the API key when one is set) and the rest."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audio_manipulations import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    SUPPORTED_FORMATS_TEXT,
    decode_audio,
    encode_audio,
)
from service.deps import MetricsDep, ModelsDep, SettingsDep
from service.schemas import AUDIO_RESPONSE, Health, ModelInfo, RawFormat, Readiness, error

STATIC_DIR = Path(__file__).resolve().parent / "static"


def operation_id(route: APIRoute) -> str:
    """Operation IDs are the function names (``enhance``, ``list_models``...)."""
    return route.name


enhance_router = APIRouter(tags=["enhance"], generate_unique_id_function=operation_id)
router = APIRouter(generate_unique_id_function=operation_id)


def content_disposition(filename: str | None) -> str:
    name = f"enhanced_{Path(filename or 'audio').name}"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


@enhance_router.post("/enhance", response_class=Response, responses=AUDIO_RESPONSE,
                     summary="Enhance an audio file")
async def enhance(
    models: ModelsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    file: Annotated[UploadFile, File(
        description="The audio: WAV, FLAC, or headerless samples in `format`.",
        # format: binary is what makes Swagger UI show a file picker.
        json_schema_extra={"format": "binary"})],
    sample_rate: Annotated[int | None, Form(
        ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE,
        description="Sample rate of headerless audio, Hz. WAV and FLAC carry their own.",
        json_schema_extra={"examples": [48000]})] = None,
    format: Annotated[RawFormat, Form(
        description=f"Encoding of headerless audio (float32 or int16, little-endian); WAV "
                    f"and FLAC carry their own. Supported: {SUPPORTED_FORMATS_TEXT}.")
    ] = RawFormat.f32le,
    model: Annotated[str | None, Form(
        description="Which model to use (see `GET /models`); the default model if "
                    "omitted.")] = None,
) -> Response:
    """Return the enhanced audio in the format, sample rate, channels and length sent."""
    enhancer = models.get(model)
    data = await file.read()
    audio = await asyncio.to_thread(decode_audio, data, format.value, sample_rate)
    started = time.perf_counter()
    try:
        enhanced = await enhancer.enhance_async(audio.samples, audio.sample_rate,
                                                timeout=settings.REQUEST_TIMEOUT_S)
    except TimeoutError:
        raise HTTPException(504, f"enhancing took longer than "
                                 f"{settings.REQUEST_TIMEOUT_S:g} s") from None
    elapsed = time.perf_counter() - started
    encoded, clipped = await asyncio.to_thread(encode_audio, enhanced, audio.sample_rate,
                                               audio.format)
    metrics.audio_seconds.inc(audio.samples.size / audio.sample_rate)
    return Response(encoded, media_type=audio.format.media_type, headers={
        "Content-Disposition": content_disposition(file.filename),
        "X-Sample-Rate": str(audio.sample_rate),
        "X-Sample-Count": str(audio.samples.shape[0]),
        "X-Channels": str(audio.channels),
        "X-Processing-Time": f"{elapsed:.6f}",
        "X-Clipped-Samples": str(clipped),
    })


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


@router.get("/metrics", response_class=Response, tags=["operations"],
            summary="Prometheus metrics",
            responses={200: {"description": "Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(models: ModelsDep, metrics: MetricsDep) -> Response:
    metrics.worker_restarts.set(models.worker_restarts)
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

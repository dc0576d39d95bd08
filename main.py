"""The HTTP service: ``POST /enhance`` on a pool of model workers.

Run with ``python main.py`` (address and port from the settings) or
``uvicorn main:app --port N``. Interactive docs at ``/docs`` work offline.
"""

import asyncio
import importlib.util
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from audio_manipulations import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    RAW_FORMATS,
    SUPPORTED_FORMATS_TEXT,
    decode_audio,
    encode_audio,
)
from errors import (
    EnhancerClosed,
    EnhancerError,
    InvalidAudio,
    ModelError,
    Overloaded,
    UnsupportedFormat,
    WorkerCrashed,
)
from model_registry import ModelRegistry, UnknownModel
from service_middleware import EnhanceLimits, Metrics, MetricsMiddleware
from settings import Settings, SettingsError, load_settings

# Library errors → HTTP status; the library itself knows nothing of HTTP.
ERROR_STATUS: dict[type[EnhancerError], int] = {
    UnsupportedFormat: 415,
    UnknownModel: 404,
    InvalidAudio: 422,
    WorkerCrashed: 503,
    Overloaded: 503,
    EnhancerClosed: 503,
    ModelError: 500,
}


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
    description: str
    default: bool


class Readiness(BaseModel):
    status: str
    workers: int
    frame_length: int
    model_sample_rate: int


def _error(description: str) -> dict:
    return {"model": ErrorMessage, "description": description}


AUDIO_RESPONSE = {
    200: {
        "description": "The enhanced audio, in the format, rate, channels and length sent.",
        "content": {media: {"schema": {"type": "string", "format": "binary"}}
                    for media in ("application/octet-stream", "audio/wav", "audio/flac")},
        "headers": {
            "Content-Disposition": {"description": "attachment; enhanced_<original name>",
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
    400: _error("The body is not valid multipart/form-data."),
    401: _error("X-API-Key is missing or wrong (only when the service has an API key)."),
    404: _error("The model named in `model` does not exist; the detail lists those that do."),
    413: _error("The upload is larger than MAX_UPLOAD_MB."),
    415: _error("The audio format is not supported."),
    422: _error("The audio or a form field is invalid: empty, truncated, NaN/Inf samples, "
                "a byte count that does not fit the encoding, or a missing or out-of-range "
                "sample rate."),
    503: _error("Too many requests are waiting (retry after Retry-After seconds), or a worker "
                "died while holding this request."),
    504: _error("The request took longer than REQUEST_TIMEOUT_S."),
}


api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed only when the service has API_KEY set.")


def require_api_key(request: Request,
                    key: Annotated[str | None, Depends(api_key_header)]) -> None:
    expected = request.app.state.settings.API_KEY
    if not (key and secrets.compare_digest(key.encode(), expected.encode())):
        raise HTTPException(401, "a valid X-API-Key header is required")


def get_models(request: Request) -> ModelRegistry:
    return request.app.state.models


ModelsDep = Annotated[ModelRegistry, Depends(get_models)]


def _swagger_static_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(spec.submodule_search_locations[0]) / "static"


def _content_disposition(filename: str | None) -> str:
    name = f"enhanced_{Path(filename or 'audio').name}"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the worker pool starts with the app's lifespan, not here."""
    settings = settings or load_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models = await asyncio.to_thread(ModelRegistry, settings.model_path,
                                         settings.models_dir, settings.NUM_PROCESSES,
                                         settings.DESIRED_SAMPLE_RATE)
        app.state.models = models
        try:
            yield
        finally:
            await asyncio.to_thread(models.close)

    app = FastAPI(
        title="Audio enhancement service",
        version="1.0.0",
        description="Enhance speech with a TFLite model. Upload WAV, FLAC or headerless "
                    "samples to `POST /enhance` and get the enhanced audio back in the same "
                    "format, rate, channels and length.",
        lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(EnhanceLimits, path="/enhance",
                       max_bytes=int(settings.MAX_UPLOAD_MB * 1_000_000),
                       max_pending=settings.MAX_PENDING_REQUESTS, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.mount("/static/swagger", StaticFiles(directory=_swagger_static_dir()),
              name="swagger-static")

    @app.exception_handler(EnhancerError)
    async def enhancer_error(request: Request, exc: EnhancerError) -> JSONResponse:
        status = next((code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind)),
                      500)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{err['loc'][-1]}: {err['msg']}" for err in exc.errors())
        return JSONResponse({"detail": problems}, status_code=422)

    # The key check (and its scheme in the OpenAPI schema) exists only when a key is set.
    guard = [Depends(require_api_key)] if settings.API_KEY else []

    @app.post("/enhance", response_class=Response, responses=AUDIO_RESPONSE,
              dependencies=guard, summary="Enhance an audio file")
    async def enhance(
        models: ModelsDep,
        file: Annotated[UploadFile, File(
            description="The audio: WAV, FLAC, or headerless samples in `format`.",
            # format: binary is what makes Swagger UI show a file picker.
            json_schema_extra={"format": "binary"})],
        sample_rate: Annotated[int | None, Form(
            ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE,
            description="Sample rate of headerless audio, Hz. WAV and FLAC carry their "
                        "own.", json_schema_extra={"examples": [48000]})] = None,
        format: Annotated[str, Form(
            description=f"Encoding of headerless audio: one of {', '.join(RAW_FORMATS)} "
                        f"(float32 or int16, little-endian). Supported: "
                        f"{SUPPORTED_FORMATS_TEXT}.",
            json_schema_extra={"examples": list(RAW_FORMATS)})] = "f32le",
        model: Annotated[str | None, Form(
            description="Which model to use (see GET /models); the default model if "
                        "omitted.")] = None,
    ) -> Response:
        """Return the enhanced audio in the format, sample rate, channels and length sent."""
        enhancer = models.get(model)
        data = await file.read()
        audio = await asyncio.to_thread(decode_audio, data, format, sample_rate)
        started = time.perf_counter()
        try:
            enhanced = await asyncio.wait_for(
                enhancer.enhance_async(audio.samples, audio.sample_rate),
                settings.REQUEST_TIMEOUT_S)
        except TimeoutError:
            raise HTTPException(504, f"enhancing took longer than "
                                     f"{settings.REQUEST_TIMEOUT_S:g} s") from None
        elapsed = time.perf_counter() - started
        encoded, clipped = await asyncio.to_thread(encode_audio, enhanced, audio.sample_rate,
                                                   audio.format)
        metrics.audio_seconds.inc(audio.samples.size / audio.sample_rate)
        return Response(encoded, media_type=audio.format.media_type, headers={
            "Content-Disposition": _content_disposition(file.filename),
            "X-Sample-Rate": str(audio.sample_rate),
            "X-Sample-Count": str(audio.samples.shape[0]),
            "X-Channels": str(audio.channels),
            "X-Processing-Time": f"{elapsed:.6f}",
            "X-Clipped-Samples": str(clipped),
        })

    @app.get("/health", response_model=Health, summary="The process is alive")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Readiness, summary="The model and every worker are up",
             responses={503: _error("The model is not loaded or a worker is down.")})
    async def ready(models: ModelsDep) -> Readiness | JSONResponse:
        if not models.is_ready:
            return JSONResponse({"detail": "the worker pool is not ready"}, status_code=503)
        return Readiness(status="ready", workers=models.worker_count,
                         frame_length=models.default.frame_length,
                         model_sample_rate=models.default.model_sample_rate)

    @app.get("/models", response_model=list[ModelInfo], summary="The models served")
    async def list_models(models: ModelsDep) -> list[ModelInfo]:
        return [ModelInfo(**info) for info in models.describe()]

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus_metrics(models: ModelsDep) -> Response:
        metrics.worker_restarts.set(models.worker_restarts)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
            # Forms open ready to fill: pick a file, press Execute, download the result.
            swagger_ui_parameters={"tryItOutEnabled": True})

    return app


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn main:app`` builds the app on first access, so importing this module (as
    # spawned workers do with the main script) reads no settings and builds nothing.
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    import sys

    import uvicorn

    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"main.py: error: {exc}")
    uvicorn.run(create_app(settings), host=settings.APP_INTERFACE, port=settings.APP_PORT)


if __name__ == "__main__":
    main()

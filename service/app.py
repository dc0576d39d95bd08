"""The FastAPI app: its lifespan (the model pools), error handlers, Swagger and static files."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import enhancer
from enhancer.errors import EnhancerError
from enhancer.registry import ModelRegistry
from service.deps import require_api_key
from service.jobs_routes import allowed_methods, job_key_header, jobs_router
from service.jobs_service import start_jobs
from service.memory import InflightMemory
from service.metrics import Metrics
from service.middleware import EnhanceLimits, MetricsMiddleware, error_response
from service.routes import STATIC_DIR, keyed_router, router
from service.settings import Settings, load_settings
from service.stream_routes import StreamCount, stream_router

log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own start-up lines


def _swagger_static_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(spec.submodule_search_locations[0]) / "static"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start a worker pool per served model; close them all when the server stops."""
    settings: Settings = app.state.settings
    models = await asyncio.to_thread(ModelRegistry.from_settings, settings)
    app.state.models = models
    app.openapi_schema = None  # rebuilt with the served models as the `model` choices
    base = f"http://{settings.APP_INTERFACE}:{settings.APP_PORT}"
    log.info("serving models %s (default %s) on %d worker processes",
             ", ".join(models.names), models.default_name, models.worker_count)
    log.info("try it at %s/ ; API docs at %s/docs ; metrics at %s/metrics", base, base, base)
    jobs = await start_jobs(app)
    try:
        yield
    finally:
        await asyncio.to_thread(jobs.close)
        await asyncio.to_thread(models.close)


DESCRIPTION = (
    "Enhance speech with a TFLite model. Upload WAV, FLAC or headerless samples to "
    "`POST /enhance` and get the enhanced audio back in the same format, rate, channels and "
    "length. Try it in a browser at `/`.\n\n"
    "**Live streams**: `WebSocket /enhance/stream?sample_rate=48000&encoding=f32le&"
    "channels=1&model=NAME` (with an API key set, the `X-API-Key` header or the `api_key` "
    "query parameter). Send binary PCM chunks of any size; enhanced PCM comes back as each "
    "hop is ready; send the text `{\"type\": \"end\"}` to flush the tail and get a JSON "
    "summary. Close codes: 4400 bad parameter or message, 4401 key, 4404 unknown model, "
    "4408 idle or not reading, 4415 encoding, 4422 bad data, 1009 message too large, "
    "1011 server error, 1013 too many streams.")


def _openapi_with_served_models(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema, with ``model`` an enum of the served models, the default first.

    Swagger UI then opens its form with a valid model instead of the word "string".
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    models: ModelRegistry | None = getattr(app.state, "models", None)
    for component in schema.get("components", {}).get("schemas", {}).values():
        properties = component.get("properties", {})
        if "file" in properties:
            # Optional in the code only because the audio may come as the raw body instead;
            # first, as the form's one field that must be filled.
            component["required"] = ["file"]
            component["properties"] = properties = {"file": properties.pop("file"),
                                                    **properties}
            properties["file"].pop("anyOf", None)
            properties["file"].update(type="string", format="binary")
        field = properties.get("model")
        if models is not None and field is not None and "anyOf" in field:
            field.pop("anyOf")
            field.update(type="string", enum=models.names, default=models.default_name)
    _no_query_defaults_beside_forms(schema)
    if models is not None:
        _served_models_in_queries(schema, models)
    else:
        app.openapi_schema = None  # not started yet: describe without the choices, cache later
    return schema


def _no_query_defaults_beside_forms(schema: dict[str, Any]) -> None:
    """Query parameters of an operation that also takes a multipart form, without their
    defaults (said in words instead): Swagger UI sends a query parameter that has a default
    along with the form, and a form upload with query parameters is refused (422)."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            content = operation.get("requestBody", {}).get("content", {})
            if "multipart/form-data" not in content:
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "query":
                    continue
                default = parameter.get("schema", {}).pop("default", None)
                if default is not None:
                    parameter["description"] = (f"{parameter.get('description', '')} "
                                                f"Default: `{default}`.").strip()


def _served_models_in_queries(schema: dict[str, Any], models: ModelRegistry) -> None:
    """The ``model`` query parameter (of a raw-body upload) as an enum of the served models;
    no default, so Swagger UI sends it only when one is picked."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "model" and "anyOf" in parameter["schema"]:
                    parameter["schema"].pop("anyOf")
                    parameter["schema"].update(type="string", enum=models.names)


def _add_error_handlers(app: FastAPI) -> None:
    """Library errors as their HTTP status; validation errors as one line of ``detail``."""

    @app.exception_handler(EnhancerError)
    async def enhancer_error(request: Request, exc: EnhancerError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path serves, not only the first route's
            headers["Allow"] = allowed_methods(request.app, request.url.path)
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{err['loc'][-1]}: {err['msg']}" for err in exc.errors())
        return JSONResponse({"detail": problems}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the worker pools start with the app's lifespan, not here."""
    settings = settings or load_settings()
    metrics = Metrics()
    app = FastAPI(title="Audio enhancement service", version=enhancer.__version__,
                  description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.openapi = lambda: _openapi_with_served_models(app)  # type: ignore[method-assign]
    app.state.memory = memory = InflightMemory(int(settings.MAX_INFLIGHT_MB * 1_000_000))
    app.add_middleware(EnhanceLimits, settings=settings, metrics=metrics, memory=memory)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app)
    # The key is checked by EnhanceLimits before any body is read; the dependency puts its
    # scheme in the OpenAPI schema, and only when a key is set.
    guard = [Depends(require_api_key)] if settings.api_keys else []
    app.include_router(keyed_router, dependencies=guard)
    app.include_router(router)
    app.include_router(stream_router)
    # Each route checks the key (a job is its key's); the scheme is documented when keys are.
    job_guard = [Depends(job_key_header)] if settings.api_keys else []
    app.include_router(jobs_router, dependencies=job_guard)
    app.state.streams = StreamCount()
    app.mount("/static/swagger", StaticFiles(directory=_swagger_static_dir()),
              name="swagger-static")
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app

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
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from enhancer.errors import EnhancerError
from enhancer.registry import ModelRegistry
from enhancer.settings import Settings, load_settings
from service.deps import require_api_key
from service.middleware import EnhanceLimits, Metrics, MetricsMiddleware, error_response
from service.routes import STATIC_DIR, enhance_router, router

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
    models = await asyncio.to_thread(ModelRegistry, settings.model_path, settings.models_dir,
                                     settings.NUM_PROCESSES, settings.DESIRED_SAMPLE_RATE)
    app.state.models = models
    app.openapi_schema = None  # rebuilt with the served models as the `model` choices
    base = f"http://{settings.APP_INTERFACE}:{settings.APP_PORT}"
    log.info("serving models %s (default %s) on %d worker processes",
             ", ".join(models.names), models.default_name, models.worker_count)
    log.info("try it at %s/ ; API docs at %s/docs ; metrics at %s/metrics", base, base, base)
    try:
        yield
    finally:
        await asyncio.to_thread(models.close)


def _openapi_with_served_models(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema, with ``model`` an enum of the served models, the default first.

    Swagger UI then opens its form with a valid model instead of the word "string".
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    models: ModelRegistry | None = getattr(app.state, "models", None)
    if models is None:
        app.openapi_schema = None  # not started yet: describe without the choices, cache later
        return schema
    for component in schema.get("components", {}).get("schemas", {}).values():
        field = component.get("properties", {}).get("model")
        if field is not None and "anyOf" in field:
            field.pop("anyOf")
            field.update(type="string", enum=models.names, default=models.default_name)
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the worker pools start with the app's lifespan, not here."""
    settings = settings or load_settings()
    metrics = Metrics()
    app = FastAPI(
        title="Audio enhancement service",
        version="1.0.0",
        description="Enhance speech with a TFLite model. Upload WAV, FLAC or headerless "
                    "samples to `POST /enhance` and get the enhanced audio back in the same "
                    "format, rate, channels and length. Try it in a browser at `/`.",
        lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.openapi = lambda: _openapi_with_served_models(app)  # type: ignore[method-assign]
    app.add_middleware(EnhanceLimits, path="/enhance",
                       max_bytes=int(settings.MAX_UPLOAD_MB * 1_000_000),
                       max_pending=settings.MAX_PENDING_REQUESTS, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(EnhancerError)
    async def enhancer_error(request: Request, exc: EnhancerError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{err['loc'][-1]}: {err['msg']}" for err in exc.errors())
        return JSONResponse({"detail": problems}, status_code=422)

    # The key check (and its scheme in the OpenAPI schema) exists only when a key is set.
    guard = [Depends(require_api_key)] if settings.API_KEY else []
    app.include_router(enhance_router, dependencies=guard)
    app.include_router(router)
    app.mount("/static/swagger", StaticFiles(directory=_swagger_static_dir()),
              name="swagger-static")
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app

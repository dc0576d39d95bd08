"""The routes' dependencies, as ``Annotated`` aliases: settings, models, metrics, the in-flight
memory, the API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from enhancer.registry import ModelRegistry
from service.memory import InflightMemory
from service.metrics import Metrics
from service.middleware import any_key_equal
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_models(request: Request) -> ModelRegistry:
    return request.app.state.models


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_memory(request: Request) -> InflightMemory:
    return request.app.state.memory


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
MemoryDep = Annotated[InflightMemory, Depends(get_memory)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed only when the service has API_KEY or "
                                          "API_KEYS set.")


def require_api_key(settings: SettingsDep,
                    key: Annotated[str | None, Depends(api_key_header)]) -> None:
    if not any_key_equal(key, settings.api_keys.values()):
        raise HTTPException(401, "a valid X-API-Key header is required")

"""ASGI middleware of the service: upload and concurrency limits, and Prometheus metrics.

Both are plain ASGI so they act before FastAPI reads a body: an oversize or excess request is
refused without buffering it.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enhancer.errors import EnhancerError, Overloaded, TooLarge
from service.schemas import RETRY_AFTER_S, status_for


def error_response(error: EnhancerError) -> JSONResponse:
    """The JSON answer to a library error: its status, its message, a Retry-After if due."""
    status = status_for(error)
    headers = {"Retry-After": str(RETRY_AFTER_S[status])} if status in RETRY_AFTER_S else None
    return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "HTTP requests by path, method and status",
                                ["path", "method", "status"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency",
                                 ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                          10, 30, 60))
        self.pending = Gauge("enhance_pending_requests",
                             "/enhance requests waiting or running", registry=self.registry)
        self.audio_seconds = Counter("enhance_audio_seconds",
                                     "Seconds of audio enhanced (per channel)",
                                     registry=self.registry)
        self.worker_restarts = Gauge("enhance_worker_restarts",
                                     "Worker processes replaced after dying",
                                     registry=self.registry)


class MetricsMiddleware:
    """Count every request by route template (not raw path, to bound cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


class EnhanceLimits:
    """Limit ``/enhance`` uploads to ``max_bytes`` and to ``max_pending`` at once.

    The size is checked against ``Content-Length`` before reading, and counted while
    reading, so a body that lies about (or omits) its length is cut off as soon as it
    passes the limit.
    """

    def __init__(self, app: ASGIApp, path: str, max_bytes: int, max_pending: int,
                 metrics: Metrics) -> None:
        self.app, self.path = app, path
        self.max_bytes, self.max_pending = max_bytes, max_pending
        self.metrics = metrics
        self.pending = 0

    def _too_large(self) -> str:
        return f"the upload is larger than the limit of {self.max_bytes / 1e6:g} MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(TooLarge(self._too_large()))(scope, receive, send)
            return
        if self.pending >= self.max_pending:
            busy = Overloaded(f"the service is busy: {self.pending} requests are waiting; "
                              f"retry later")
            await error_response(busy)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large())
            return message

        self.pending += 1
        self.metrics.pending.set(self.pending)
        try:
            await self.app(scope, counted_receive, send)
        finally:
            self.pending -= 1
            self.metrics.pending.set(self.pending)

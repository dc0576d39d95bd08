"""ASGI middleware of the service: upload and concurrency limits, and Prometheus metrics.

Both are plain ASGI so they act before FastAPI reads a body: an oversize or excess request is
refused without buffering it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json_error(send: Send, status: int, detail: str,
                          headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


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
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json_error(send, 413, self._too_large())
            return
        if self.pending >= self.max_pending:
            await send_json_error(send, 503, f"the service is busy: {self.pending} requests "
                                             f"are waiting; retry later",
                                  headers={"Retry-After": "1"})
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

"""ASGI middleware of the service: the API key, upload and concurrency limits, metrics.

Plain ASGI, so they act before FastAPI reads a body: a request without the key, an oversize
or a slow one is refused without buffering it or taking a slot.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterable

from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enhancer.errors import EnhancerError, Overloaded, TooLarge
from service.memory import InflightMemory, Reservation
from service.metrics import Metrics
from service.schemas import RETRY_AFTER_S, status_for
from service.settings import Settings


def error_response(error: EnhancerError) -> JSONResponse:
    """The JSON answer to a library error: its status, its message, a Retry-After if due."""
    status = status_for(error)
    headers = {"Retry-After": str(RETRY_AFTER_S[status])} if status in RETRY_AFTER_S else None
    return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)


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
    """Guard ``/enhance`` before FastAPI sees it: key, size, body pace, then a slot.

    In that order, so a client without the key, or one that uploads slowly, costs nothing
    but its connection: the key is checked before the body is read, and a request takes one
    of ``max_pending`` slots only once its whole body has arrived. The size is checked against
    ``Content-Length`` first and counted while reading, so a body that lies about (or omits)
    its length is cut off as soon as it passes the limit. The body's bytes are held against
    the in-flight memory budget while the request runs.
    """

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics,
                 memory: InflightMemory) -> None:
        self.app = app
        self.settings = settings
        self.max_bytes = int(settings.MAX_UPLOAD_MB * 1_000_000)
        self.metrics = metrics
        self.memory = memory
        self.pending = 0

    def _too_large(self) -> str:
        return f"the upload is larger than the limit of {self.max_bytes / 1e6:g} MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        # Streams check the key themselves, after accepting, so a browser sees why it failed.
        if scope["type"] != "http" or path not in KEYED_PATHS:
            await self.app(scope, receive, send)
            return
        keys = self.settings.api_keys.values()
        if keys and not key_matches(scope, keys):
            await JSONResponse({"detail": "a valid X-API-Key header is required"},
                               status_code=401)(scope, receive, send)
            return
        if path != "/enhance":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(TooLarge(self._too_large()))(scope, receive, send)
            return
        with self.memory.reservation() as body_memory:
            try:
                chunks = await self._read_body(receive, body_memory)
            except _ClientGone:
                return
            except (EnhancerError, HTTPException) as problem:
                await _problem_response(problem)(scope, receive, send)
                return
            await self._run_in_a_slot(scope, receive, send, chunks)

    async def _read_body(self, receive: Receive, body_memory: Reservation) -> list[bytes]:
        """The whole body, each chunk held against the in-flight memory as it arrives."""
        chunks = []
        async for chunk in self._body(receive):
            # Twice: the app holds the body once more while it joins or parses it.
            body_memory.add(2 * len(chunk))
            chunks.append(chunk)
        return chunks

    async def _run_in_a_slot(self, scope: Scope, receive: Receive, send: Send,
                             chunks: list[bytes]) -> None:
        """Hand the request to the app in one of MAX_PENDING_REQUESTS slots, or answer 503."""
        if self.pending >= self.settings.MAX_PENDING_REQUESTS:
            busy = Overloaded(f"the service is busy: {self.pending} requests are being "
                              f"enhanced; retry later")
            await error_response(busy)(scope, receive, send)
            return
        self.pending += 1
        self.metrics.pending.set(self.pending)
        try:
            await self.app(scope, _replay(chunks, receive), send)
        finally:
            self.pending -= 1
            self.metrics.pending.set(self.pending)

    async def _body(self, receive: Receive) -> AsyncIterator[bytes]:
        """The body's chunks, each within BODY_TIMEOUT_S, at MIN_UPLOAD_KBPS on average."""
        pause = self.settings.BODY_TIMEOUT_S
        min_rate = self.settings.MIN_UPLOAD_KBPS * 1000
        started = time.monotonic()
        received = 0
        while True:
            try:
                async with asyncio.timeout(pause):  # no task per chunk, as wait_for makes
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the upload paused for more than {pause:g} s "
                                         f"(BODY_TIMEOUT_S)") from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                raise TooLarge(self._too_large())
            elapsed = time.monotonic() - started
            if elapsed > pause and received < min_rate * elapsed:
                raise HTTPException(408, f"the upload is slower than {min_rate / 1000:g} kB/s "
                                         f"(MIN_UPLOAD_KBPS)")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


# The HTTP paths behind the API key when one is set (and /enhance/stream, which checks it).
KEYED_PATHS = frozenset({"/enhance", "/metrics"})


class _ClientGone(Exception):
    """The client disconnected while sending its body."""


def _problem_response(problem: EnhancerError | HTTPException) -> JSONResponse:
    if isinstance(problem, EnhancerError):
        return error_response(problem)
    return JSONResponse({"detail": problem.detail}, status_code=problem.status_code)


def key_matches(scope: Scope, keys: Iterable[str]) -> bool:
    """The key from the ``X-API-Key`` header or, for browsers' WebSockets (which cannot set
    headers), the ``api_key`` query parameter, is one of ``keys``."""
    given = Headers(scope=scope).get("x-api-key")
    if given is None and scope["type"] == "websocket":
        given = QueryParams(scope.get("query_string", b"")).get("api_key")
    return any_key_equal(given, keys)


def keys_equal(given: str | None, expected: str) -> bool:
    """``given`` is the key, compared in constant time."""
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


def any_key_equal(given: str | None, keys: Iterable[str]) -> bool:
    """``given`` is one of ``keys`` (API_KEY and API_KEYS'), each compared in constant time
    and all of them compared, so the time does not tell which came close."""
    matches = [keys_equal(given, key) for key in keys]
    return any(matches)


def _replay(chunks: list[bytes], receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body's chunks, letting go of each as it goes,
    then waits for the client to disconnect."""
    pending = [*reversed(chunks)] or [b""]
    chunks.clear()

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": bool(pending)}
        return await receive()

    return replay

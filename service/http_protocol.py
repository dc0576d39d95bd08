"""uvicorn's HTTP/1.1 protocol with the two timeouts it lacks: headers and writes.

- A client has ``header_timeout`` seconds to send a request's headers (slowloris).
- A client that reads nothing of a response for ``write_timeout`` seconds is cut off, and the
  response it pinned in the send buffer is dropped.

Idle connections between requests are uvicorn's own ``timeout_keep_alive``; slow request
bodies are timed by :class:`service.middleware.EnhanceLimits`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("uvicorn.error")


@functools.cache
def _timeouts() -> tuple[float, float]:
    """HEADER_TIMEOUT_S and WRITE_TIMEOUT_S, read once per process (uvicorn's worker
    processes import this class by name, so it takes its settings itself)."""
    from service.settings import load_settings

    settings = load_settings()
    return settings.HEADER_TIMEOUT_S, settings.WRITE_TIMEOUT_S


class _Guards:
    """The timeouts, for either of uvicorn's HTTP/1.1 protocols (it goes first in the bases)."""

    cycle: Any
    client: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.write_timeout = _timeouts()
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._cycle_timed: object | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._start_header_timer()  # the next request's headers are on their way
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not None and self.cycle is not self._cycle_timed:
            self._cycle_timed = self.cycle  # headers complete: the request has started
            self._cancel(self._header_timer)
            self._header_timer = None

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # The connection now belongs to the WebSocket protocol, which has its own timeouts.
        self._cancel(self._header_timer)
        self._cancel(self._write_timer)
        self._header_timer = self._write_timer = None
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._write_timer)
        super().connection_lost(exc)  # type: ignore[misc]

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._write_expired)

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        self._cancel(self._write_timer)
        self._write_timer = None

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout,
                                                      self._header_expired)

    def _header_expired(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def _write_expired(self) -> None:
        # abort(), not close(): close() would keep the unread response until it is sent.
        log.info("%s read nothing for %.0f s: connection dropped", self.client,
                 self.write_timeout)
        self.transport.abort()

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


class GuardedH11Protocol(_Guards, H11Protocol):  # type: ignore[misc]
    """uvicorn's pure-Python protocol, guarded.

    ``http="service.http_protocol:GuardedH11Protocol"``."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed
    GUARDED_PROTOCOL = "service.http_protocol:GuardedH11Protocol"
else:
    class GuardedHttpToolsProtocol(_Guards, HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's C-parser protocol (much faster for large bodies), guarded."""

    GUARDED_PROTOCOL = "service.http_protocol:GuardedHttpToolsProtocol"

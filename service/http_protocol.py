"""uvicorn's HTTP/1.1 protocol with the guards it lacks: on headers and on writes.

- A client has ``header_timeout`` seconds to send a request's headers (slowloris).
- A request's headers (request line included) may be at most ``max_header_bytes`` long
  (MAX_HEADER_KB): the parser is handed no more than that of an unfinished header, so a
  connection holds at most that much of one, and a longer one gets 431.
- A client that reads nothing of a response for ``write_timeout`` seconds is cut off, and the
  response it pinned in the send buffer is dropped.

Idle connections between requests are uvicorn's own ``timeout_keep_alive``; slow request
bodies are timed by :class:`service.middleware.EnhanceLimits`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any, NamedTuple

import h11
from uvicorn.protocols.http.h11_impl import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, H11Protocol

log = logging.getLogger("uvicorn.error")


class _Limits(NamedTuple):
    header_timeout: float
    write_timeout: float
    max_header_bytes: int


@functools.cache
def _limits() -> _Limits:
    """HEADER_TIMEOUT_S, WRITE_TIMEOUT_S and MAX_HEADER_KB, read once per process (uvicorn's
    worker processes import this class by name, so it takes its settings itself)."""
    from service.settings import load_settings

    settings = load_settings()
    return _Limits(settings.HEADER_TIMEOUT_S, settings.WRITE_TIMEOUT_S,
                   settings.MAX_HEADER_KB * 1024)


def header_too_large_response(max_header_bytes: int) -> bytes:
    """The whole 431 answer, JSON ``detail`` as every refusal has; the connection closes."""
    body = json.dumps({"detail": f"the request's headers are larger than the limit of "
                                 f"{max_header_bytes // 1024} kB (MAX_HEADER_KB)"}).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(body), body))


class _Guards:
    """The guards, for either of uvicorn's HTTP/1.1 protocols (it goes first in the bases)."""

    cycle: Any
    client: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.write_timeout, self.max_header_bytes = _limits()
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._cycle_timed: object | None = None
        self._cycle_counted: object | None = None
        self._header_bytes = 0  # of the request whose headers are arriving
        self._refused = False  # answered 431: what still arrives is read and dropped

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.cycle is None or self.cycle.response_complete:
            self._start_header_timer()  # the next request's headers are on their way
        self._feed(data)
        if self.cycle is not None and self.cycle is not self._cycle_timed:
            self._cycle_timed = self.cycle  # headers complete: the request has started
            self._cancel(self._header_timer)
            self._header_timer = None

    def _in_body(self) -> bool:
        """The parser is reading a request's body (not headers, not between requests)."""
        raise NotImplementedError

    def _feed(self, data: bytes) -> None:
        """Hand ``data`` to the parser, but never more than ``max_header_bytes`` of one
        request's headers: beyond them the request gets 431, before the parser holds more."""
        while data:
            self._count_from_new_request()
            if self._in_body():
                super().data_received(data)  # type: ignore[misc]
                return
            room = self.max_header_bytes - self._header_bytes
            if room <= 0:
                self._refuse_headers()
                return
            head, data = data[:room], data[room:]
            self._header_bytes += len(head)
            super().data_received(head)  # type: ignore[misc]
            if self.transport.is_closing():  # refused by the parser (400)
                return
            upgraded = self.transport.get_protocol()
            if upgraded is not self:  # now a WebSocket: the rest is its first frames
                if data and isinstance(upgraded, asyncio.Protocol):
                    upgraded.data_received(data)
                return

    def _count_from_new_request(self) -> None:
        # A new cycle: the last request's headers are complete; count the next one's afresh.
        if self.cycle is not self._cycle_counted:
            self._cycle_counted = self.cycle
            self._header_bytes = 0

    def _refuse_headers(self) -> None:
        log.warning("%s sent headers over MAX_HEADER_KB: answered 431", self.client)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # pipelined behind a response still being sent
            return
        self._refused = True
        self.transport.write(header_too_large_response(self.max_header_bytes))
        # Closed once the client has read it and hung up, or after HEADER_TIMEOUT_S:
        # closing at once, with its bytes unread, would reset the connection and lose the
        # answer. Meanwhile what arrives is dropped unread.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._cancel(self._header_timer)
        self._header_timer = self.loop.call_later(self.header_timeout, self.transport.abort)

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

    conn: h11.Connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # h11's own limit (16 kB, answered 400) is raised above MAX_HEADER_KB, which decides.
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max(
            2 * self.max_header_bytes, DEFAULT_MAX_INCOMPLETE_EVENT_SIZE))

    def _in_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed
    GUARDED_PROTOCOL = "service.http_protocol:GuardedH11Protocol"
else:
    class GuardedHttpToolsProtocol(_Guards, HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's C-parser protocol (much faster for large bodies), guarded."""

        _reading_body = False

        def on_headers_complete(self) -> None:
            self._reading_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._reading_body = False
            super().on_message_complete()

        def _in_body(self) -> bool:
            return self._reading_body

    GUARDED_PROTOCOL = "service.http_protocol:GuardedHttpToolsProtocol"

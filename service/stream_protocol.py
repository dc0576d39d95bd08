"""uvicorn's WebSocket protocol (websockets' sans-I/O one, uvicorn's default) with the write
timeout it lacks.

uvicorn waits for a paused transport to drain before it sends anything, the close frame
included, and closes a connection with ``transport.close()``, which keeps whatever is
buffered until the client reads it. A client that reads nothing would so hold its stream,
its slot and its buffers for as long as it keeps the connection open. Here a connection whose
writes stay paused for ``STREAM_SEND_TIMEOUT_S``, or that still holds unsent data that long
after the close, is aborted: its buffers are dropped and the app's pending send fails as a
disconnect. And the last message read is freed when the connection ends, not whenever the
garbage collector next makes a full pass (see ``_release_parser``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("uvicorn.error")


@functools.cache
def _send_timeout() -> float:
    """STREAM_SEND_TIMEOUT_S, read once per process (uvicorn's worker processes import this
    class by name, so it takes its setting itself)."""
    from service.settings import load_settings

    return load_settings().STREAM_SEND_TIMEOUT_S


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """``ws="service.stream_protocol:GuardedWebSocketProtocol"``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_timeout = _send_timeout()
        self._abort_timer: asyncio.TimerHandle | None = None

    def _release_parser(self) -> None:
        """End websockets' parser, whose generator sits in a reference cycle with the last
        frame it read (a whole message: up to MAX_STREAM_MESSAGE_KB), so that the frame is
        freed now, not at the garbage collector's next full pass."""
        self.conn.receive_eof()
        self.conn.parser.close()
        if self.conn.parser_exc is not None:  # EOFError: its traceback holds the frame too
            traceback.clear_frames(self.conn.parser_exc.__traceback__)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._abort_later("read nothing")

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.close_sent:
            self._cancel_abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_abort()
        super().connection_lost(exc)
        self._release_parser()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.close" and self.close_timer is not None:
            # uvicorn's own close timer calls close(), which waits for the buffer to drain;
            # a client that neither answers the close nor reads is cut off instead. (An
            # answer cancels this timer and closes normally.)
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(
                min(self.close_timeout, self.send_timeout), self._abort,
                "did not answer the close")

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected and self.transport.get_write_buffer_size():
            self._abort_later("left data unread")  # close() would keep it until read

    def _abort_later(self, why: str) -> None:
        if self._abort_timer is None and not self.disconnected:
            self._abort_timer = self.loop.call_later(self.send_timeout, self._abort, why)

    def _cancel_abort(self) -> None:
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None

    def _abort(self, why: str) -> None:
        self._abort_timer = None
        log.info("%s %s for %g s: stream connection dropped", self.client, why,
                 self.send_timeout)
        # abort(), not close(): close() would keep the unread buffer until it is sent.
        self.transport.abort()


GUARDED_WS_PROTOCOL = "service.stream_protocol:GuardedWebSocketProtocol"

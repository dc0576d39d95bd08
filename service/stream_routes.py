"""``WebSocket /enhance/stream``: live audio in, enhanced audio out, chunk by chunk.

Protocol (also in the README and the OpenAPI description):

1. Open ``/enhance/stream?sample_rate=48000&encoding=f32le&channels=1&model=NAME``
   (``encoding`` ``f32le`` or ``s16le``, interleaved; ``model`` and ``atten_lim_db``, the
   strength limit in dB, optional). With an API key
   set, send it as the ``X-API-Key`` header or, from a browser (which cannot set headers on a
   WebSocket), as the ``api_key`` query parameter.
2. The server answers one text message, ``{"type": "ready", ...}``.
3. Send binary messages of PCM of any size; enhanced PCM, same encoding and channels, comes
   back in binary messages as soon as each hop is ready.
4. Send the text message ``{"type": "end"}`` (or ``end``): the server sends the tail, then
   ``{"type": "summary", ...}`` (samples in and out, chunks, and the p50/p99 time from a
   message's arrival to its enhanced samples leaving), then closes normally. In all,
   exactly as many samples come back as were sent, equal to ``POST /enhance`` on the whole.

Messages are read as they arrive. A stream that falls behind (a burst from the client, a busy
machine) takes every audio message waiting at once and enhances them as one chunk, which
changes nothing in the output, so it catches up instead of falling further behind; a bad
message in such a batch closes the stream after the audio sent before it.

Close codes: :class:`enhancer.close_codes.CloseCode`, each with when it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from enhancer.audio_enhancer import AudioEnhancer
from enhancer.close_codes import CloseCode
from enhancer.errors import EnhancerError, InvalidAudio, UnknownModel
from enhancer.registry import ModelRegistry
from enhancer.stream import EnhancerStream
from service.metrics import Metrics
from service.middleware import key_matches
from service.settings import Settings
from service.stream_parameters import StreamClosed, StreamParameters

stream_router = APIRouter()

# At most this much audio, as float32, is gathered into one push when messages queue up.
MAX_GATHERED_BYTES = 1 << 20
# The longest text message read: {"type": "end"} with room for whitespace. It bounds the
# nesting json.loads can meet to far below the interpreter's recursion limit.
MAX_TEXT_MESSAGE_CHARS = 256


@stream_router.websocket("/enhance/stream")
async def enhance_stream(websocket: WebSocket) -> None:
    """Enhance a live stream: see the module docstring for the protocol."""
    settings: Settings = websocket.app.state.settings
    metrics: Metrics = websocket.app.state.metrics
    streams: StreamCount = websocket.app.state.streams
    # Accepted before any check, so that a browser sees why a stream is refused.
    await websocket.accept()
    counted = False
    try:
        params, enhancer = _admit(websocket, settings, websocket.app.state.models)
        streams.take(settings.MAX_STREAMS)
        counted = True
        metrics.active_streams.set(streams.open)
        stream = enhancer.open_stream(params.sample_rate, params.channels, params.atten_lim_db)
        await websocket.send_text(_ready_message(enhancer, params, stream))
        await StreamSession(websocket, stream, params, settings, metrics).run()
    except StreamClosed as closed:
        await _close(websocket, closed.code, closed.reason, settings.STREAM_SEND_TIMEOUT_S)
    except WebSocketDisconnect:
        pass  # the client left: its chunks in flight finish, nothing is kept
    except EnhancerError as exc:
        await _close(websocket, CloseCode.BAD_AUDIO if isinstance(exc, InvalidAudio)
                     else CloseCode.SERVER_ERROR, str(exc), settings.STREAM_SEND_TIMEOUT_S)
    finally:
        if counted:
            streams.release()
            metrics.active_streams.set(streams.open)


def _admit(websocket: WebSocket, settings: Settings,
           models: ModelRegistry) -> tuple[StreamParameters, AudioEnhancer]:
    """The key, then the parameters, then the model: the stream's, or why it is refused."""
    keys = settings.api_keys.values()
    if keys and not key_matches(websocket.scope, keys):
        raise StreamClosed(CloseCode.UNAUTHORIZED,
                           "a valid api_key (query) or X-API-Key header is required")
    params = StreamParameters.from_query(websocket.query_params.multi_items())
    try:
        return params, models.get(params.model)
    except UnknownModel as exc:
        raise StreamClosed(CloseCode.UNKNOWN_MODEL, str(exc)) from None


def _ready_message(enhancer: AudioEnhancer, params: StreamParameters,
                   stream: EnhancerStream) -> str:
    return json.dumps({
        "type": "ready", "model": enhancer.card.name, "sample_rate": params.sample_rate,
        "encoding": params.encoding, "channels": params.channels,
        "algorithmic_latency_ms": round(stream.algorithmic_latency_s * 1000, 2)})


# Messages read ahead of the stream's processing: enough to take several at once when it falls
# behind, few enough that a client sending faster than real time meets TCP's back-pressure.
READ_AHEAD_MESSAGES = 16
Received = tuple[Mapping[str, Any], float]  # an ASGI message and when it was read


async def _read(websocket: WebSocket, inbox: asyncio.Queue[Received]) -> None:
    """Read the client's messages as they arrive, each with its arrival time, until a text
    message or the disconnect (the protocol has nothing to read after either)."""
    while True:
        try:
            message = await websocket.receive()
        except Exception:  # whatever the failure, the connection is gone
            message = {"type": "websocket.disconnect", "code": CloseCode.ABNORMAL}
        await inbox.put((message, time.monotonic()))
        if message["type"] == "websocket.disconnect" or message.get("bytes") is None:
            return


class StreamSession:
    """Enhance the messages read by :func:`_read`. When the stream falls behind, every audio
    message waiting is taken at once and pushed as one chunk (the output is the same however
    the audio is cut), so a stream catches up instead of falling further behind."""

    def __init__(self, websocket: WebSocket, stream: EnhancerStream, params: StreamParameters,
                 settings: Settings, metrics: Metrics) -> None:
        self.websocket, self.stream, self.params = websocket, stream, params
        self.settings, self.metrics = settings, metrics
        self.started = time.monotonic()
        self.chunks = 0
        self.latencies: list[float] = []
        self.inbox: asyncio.Queue[Received] = asyncio.Queue(READ_AHEAD_MESSAGES)

    async def run(self) -> None:
        """Serve the stream until the client's end (then close normally) or an error."""
        reader = asyncio.create_task(_read(self.websocket, self.inbox))
        try:
            await self._serve()
        finally:
            await _stop(reader)

    async def _serve(self) -> None:
        waiting: Received | None = None  # a message taken while gathering audio
        while True:
            message, arrived = waiting if waiting is not None else await self._next()
            waiting = None
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", CloseCode.NORMAL))
            if message.get("bytes") is not None:
                waiting = await self._push(message, arrived)
                continue
            if not _is_end(message.get("text")):
                raise StreamClosed(CloseCode.BAD_REQUEST,
                                   'text messages must be {"type": "end"}')
            await self._finish(arrived)
            return

    async def _next(self) -> Received:
        idle = self.settings.STREAM_IDLE_TIMEOUT_S
        try:
            async with asyncio.timeout(idle):
                return await self.inbox.get()
        except TimeoutError:
            raise StreamClosed(CloseCode.TIMEOUT, f"nothing received for {idle:g} s") from None

    async def _push(self, message: Mapping[str, Any], arrived: float) -> Received | None:
        """Enhance an audio message with those waiting behind it; return the non-audio
        message met on the way, if any, to handle next."""
        samples, arrivals, waiting, bad = _gather(message, arrived, self.inbox, self.params)
        self.chunks += len(arrivals)
        if samples is not None:
            await self._send(await self.stream.push(samples), arrivals)
        if bad is not None:
            raise bad  # after the audio sent before it
        return waiting

    async def _finish(self, arrived: float) -> None:
        """The tail, the summary, and a normal close."""
        await self._send(await self.stream.finish(), [arrived])
        await self._send_bounded(json.dumps({
            "type": "summary", "samples_in": self.stream.samples_in,
            "samples_out": self.stream.samples_out, "chunks": self.chunks,
            "seconds": round(time.monotonic() - self.started, 3),
            # Time from each message's arrival to its enhanced samples leaving, ms.
            "latency_ms": {"p50": _percentile_ms(self.latencies, 50),
                           "p99": _percentile_ms(self.latencies, 99)}}))
        await _close(self.websocket, CloseCode.NORMAL, "done",
                     self.settings.STREAM_SEND_TIMEOUT_S)

    async def _send(self, samples: np.ndarray, arrivals: list[float]) -> None:
        if samples.shape[0]:
            await self._send_bounded(self.params.encode(samples))
        sent = time.monotonic()
        for arrived in arrivals:  # each message's time from arrival to its samples leaving
            self.latencies.append(sent - arrived)
            self.metrics.stream_latency.observe(self.latencies[-1])

    async def _send_bounded(self, message: bytes | str) -> None:
        """Send, or close the stream if the client has read nothing for
        STREAM_SEND_TIMEOUT_S (the server never buffers for it)."""
        try:
            async with asyncio.timeout(self.settings.STREAM_SEND_TIMEOUT_S):
                if isinstance(message, str):
                    await self.websocket.send_text(message)
                else:
                    await self.websocket.send_bytes(message)
        except TimeoutError:
            raise StreamClosed(CloseCode.TIMEOUT, "the client reads nothing: the stream "
                                                  "is closed rather than buffered") from None


async def _stop(reader: asyncio.Task[None]) -> None:
    reader.cancel()
    try:
        await reader
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # this handler is being cancelled too: let that through


def _gather(message: Mapping[str, Any], arrived: float, inbox: asyncio.Queue[Received],
            params: StreamParameters) -> tuple[np.ndarray | None, list[float],
                                                 Received | None,
                                                 StreamClosed | None]:
    """The samples of an audio message and of the audio messages already waiting behind it
    (up to ``MAX_GATHERED_BYTES``), their arrival times, a non-audio message taken from the
    inbox on the way (to handle next), and the error of a bad message (which ends the
    gathering: the audio before it still counts)."""
    audio: list[np.ndarray] = []
    arrivals: list[float] = []
    size = 0
    while True:
        try:
            audio.append(params.decode(message["bytes"]))
        except StreamClosed as bad:
            return _joined(audio), arrivals, None, bad
        arrivals.append(arrived)
        size += audio[-1].nbytes
        if inbox.empty() or size >= MAX_GATHERED_BYTES:
            return _joined(audio), arrivals, None, None
        message, arrived = inbox.get_nowait()
        if message.get("bytes") is None:
            return _joined(audio), arrivals, (message, arrived), None


def _joined(audio: list[np.ndarray]) -> np.ndarray | None:
    if not audio:
        return None
    return audio[0] if len(audio) == 1 else np.concatenate(audio)


def _percentile_ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 3) if values else 0.0


def _is_end(text: str | None) -> bool:
    """Whether a text message is the end; one too long to be it is refused before parsing,
    which also bounds its nesting (so json.loads never recurses deeply)."""
    if text is None:
        return False
    if len(text) > MAX_TEXT_MESSAGE_CHARS:
        raise StreamClosed(CloseCode.BAD_REQUEST, f'text messages must be {{"type": "end"}}; '
                                                  f'got {len(text)} characters, over '
                                                  f'{MAX_TEXT_MESSAGE_CHARS}')
    if text.strip() == "end":
        return True
    try:
        return json.loads(text) == {"type": "end"}
    except (ValueError, RecursionError):
        return False


async def _close(websocket: WebSocket, code: CloseCode, reason: str,
                 timeout: float) -> None:
    """Send the close frame; give up after ``timeout`` (a client that reads nothing never
    lets it out; service.stream_protocol then aborts its connection)."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, TimeoutError):
        async with asyncio.timeout(timeout):  # the client left first, or reads nothing
            await websocket.close(code, reason.encode()[:123].decode(errors="ignore"))


class StreamCount:
    """Open streams, counted on the event loop (no lock needed)."""

    def __init__(self) -> None:
        self.open = 0
        self._trim: asyncio.TimerHandle | None = None

    def take(self, limit: int) -> None:
        """Count one more stream, or refuse it if ``limit`` are open."""
        if self.open >= limit:
            raise StreamClosed(CloseCode.TRY_AGAIN_LATER, f"the service holds MAX_STREAMS="
                                                          f"{limit} streams; retry later")
        self.open += 1

    def release(self) -> None:
        """Count one stream fewer, and soon give the memory it freed back to the system."""
        self.open -= 1
        if self._trim is None:  # one trim for every stream that ends meanwhile
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY_S, self._trim_now)

    def _trim_now(self) -> None:
        self._trim = None
        trim = _malloc_trim()
        if trim is not None:
            trim(0)


# A stream's buffers (its messages read ahead, its audio) are freed when it ends, but glibc
# keeps freed memory in its heap, where the next allocations often cannot reuse it: a
# thousand streams' worth would stay with the process. malloc_trim hands it back (about
# 0.1 ms per MB handed back, measured; at most once a second).
TRIM_DELAY_S = 1.0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None

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
   message's arrival to its enhanced samples leaving), then closes with 1000. In all,
   exactly as many samples come back as were sent, equal to ``POST /enhance`` on the whole.

Messages are read as they arrive. A stream that falls behind (a burst from the client, a busy
machine) takes every audio message waiting at once and enhances them as one chunk, which
changes nothing in the output, so it catches up instead of falling further behind; a bad
message in such a batch closes the stream after the audio sent before it.

Close codes: 4400 bad parameter or message, 4401 no or wrong key, 4404 unknown model,
4408 idle or not reading, 4415 unknown encoding, 4422 bad audio data, 1009 message too
large, 1011 server error (a worker died holding a chunk), 1013 too many streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from enhancer.audio.encode import quantize
from enhancer.audio.formats import RAW_FORMATS, check_sample_rate
from enhancer.errors import EnhancerError, InvalidAudio, UnknownModel
from enhancer.model.attenuation import MAX_ATTEN_LIM_DB, attenuation_floor
from enhancer.registry import ModelRegistry
from enhancer.stream import EnhancerStream
from service.middleware import Metrics, key_matches
from service.settings import Settings

stream_router = APIRouter()

MAX_CHANNELS_PER_STREAM = 8
# At most this much audio, as float32, is gathered into one push when messages queue up.
MAX_GATHERED_BYTES = 1 << 20


class StreamClosed(Exception):
    """End the stream with this close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        # A close frame's reason has room for 123 bytes.
        self.reason = reason.encode()[:123].decode(errors="ignore")


@dataclass(frozen=True)
class StreamParameters:
    sample_rate: int
    encoding: str
    channels: int
    model: str | None
    atten_lim_db: float | None

    @classmethod
    def from_query(cls, query: dict[str, str]) -> StreamParameters:
        known = {"sample_rate", "encoding", "channels", "model", "api_key", "atten_lim_db"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise StreamClosed(4400, f"unknown parameter {unknown[0]!r}")
        if "sample_rate" not in query:
            raise StreamClosed(4400, "sample_rate is required")
        try:
            rate = check_sample_rate(int(query["sample_rate"]))
            channels = int(query.get("channels", "1"))
        except (TypeError, ValueError) as exc:
            raise StreamClosed(4400, str(exc) if "between" in str(exc)
                               else "sample_rate and channels must be integers") from None
        if not 1 <= channels <= MAX_CHANNELS_PER_STREAM:
            raise StreamClosed(4400, f"channels must be 1 to {MAX_CHANNELS_PER_STREAM}, "
                                     f"got {channels}")
        encoding = query.get("encoding", "f32le")
        if encoding not in RAW_FORMATS:
            raise StreamClosed(4415, f"encoding must be one of {', '.join(RAW_FORMATS)}, "
                                     f"got {encoding!r}")
        limit = query.get("atten_lim_db")
        try:
            atten_lim_db = None if limit in (None, "") else float(limit)
            attenuation_floor(atten_lim_db)
        except (ValueError, InvalidAudio):
            raise StreamClosed(4400, f"atten_lim_db must be a number of dB from 0 to "
                                     f"{MAX_ATTEN_LIM_DB:g}, got {limit!r}") from None
        return cls(rate, encoding, channels, query.get("model") or None, atten_lim_db)

    def decode(self, data: bytes) -> np.ndarray:
        dtype, scale = RAW_FORMATS[self.encoding]
        frame_bytes = np.dtype(dtype).itemsize * self.channels
        if len(data) % frame_bytes:
            raise StreamClosed(4422, f"{len(data)} bytes is not a whole number of "
                                     f"{self.channels}-channel {self.encoding} frames")
        samples = np.frombuffer(data, dtype=dtype).reshape(-1, self.channels)
        samples = (samples.astype(np.float32) if scale is None
                   else (samples / np.float32(scale)).astype(np.float32))
        if not np.isfinite(samples).all():
            raise StreamClosed(4422, "the chunk holds NaN or infinite samples")
        return samples

    def encode(self, samples: np.ndarray) -> bytes:
        dtype, scale = RAW_FORMATS[self.encoding]
        if scale is None:
            return samples.astype(dtype).tobytes()
        return quantize(samples, scale, np.dtype(dtype).type)[0].tobytes()


@stream_router.websocket("/enhance/stream")
async def enhance_stream(websocket: WebSocket) -> None:
    """Enhance a live stream: see the module docstring for the protocol."""
    settings: Settings = websocket.app.state.settings
    models: ModelRegistry = websocket.app.state.models
    metrics: Metrics = websocket.app.state.metrics
    streams: StreamCount = websocket.app.state.streams
    await websocket.accept()
    counted = False
    try:
        if settings.API_KEY and not key_matches(websocket.scope, settings.API_KEY):
            raise StreamClosed(4401, "a valid api_key (query) or X-API-Key header is required")
        params = StreamParameters.from_query(dict(websocket.query_params))
        try:
            enhancer = models.get(params.model)
        except UnknownModel as exc:
            raise StreamClosed(4404, str(exc)) from None
        if streams.open >= settings.MAX_STREAMS:
            raise StreamClosed(1013, f"the service holds MAX_STREAMS={settings.MAX_STREAMS} "
                                     f"streams; retry later")
        streams.open += 1
        counted = True
        metrics.active_streams.set(streams.open)
        stream = enhancer.open_stream(params.sample_rate, params.channels, params.atten_lim_db)
        await websocket.send_text(json.dumps({
            "type": "ready", "model": enhancer.card.name, "sample_rate": params.sample_rate,
            "encoding": params.encoding, "channels": params.channels,
            "algorithmic_latency_ms": round(stream.algorithmic_latency_s * 1000, 2)}))
        await _serve(websocket, stream, params, settings, metrics)
    except StreamClosed as closed:
        await _close(websocket, closed.code, closed.reason)
    except WebSocketDisconnect:
        pass  # the client left: its chunks in flight finish, nothing is kept
    except EnhancerError as exc:
        await _close(websocket, 4422 if isinstance(exc, InvalidAudio) else 1011, str(exc))
    finally:
        if counted:
            streams.open -= 1
            metrics.active_streams.set(streams.open)


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
            message = {"type": "websocket.disconnect", "code": 1006}
        await inbox.put((message, time.monotonic()))
        if message["type"] == "websocket.disconnect" or message.get("bytes") is None:
            return


async def _serve(websocket: WebSocket, stream: EnhancerStream, params: StreamParameters,
                 settings: Settings, metrics: Metrics) -> None:
    """Enhance the messages read by :func:`_read`. When the stream falls behind, every audio
    message waiting is taken at once and pushed as one chunk (the output is the same however
    the audio is cut), so a stream catches up instead of falling further behind."""
    started = time.monotonic()
    chunks = 0
    latencies: list[float] = []
    inbox: asyncio.Queue[Received] = asyncio.Queue(READ_AHEAD_MESSAGES)
    reader = asyncio.create_task(_read(websocket, inbox))
    waiting: Received | None = None  # a message taken while gathering audio

    async def send(samples: np.ndarray, arrivals: list[float]) -> None:
        if samples.shape[0]:
            try:
                async with asyncio.timeout(settings.STREAM_SEND_TIMEOUT_S):
                    await websocket.send_bytes(params.encode(samples))
            except TimeoutError:
                raise StreamClosed(4408, "the client reads nothing: the stream is closed "
                                         "rather than buffered") from None
        sent = time.monotonic()
        for arrived in arrivals:  # each message's time from arrival to its samples leaving
            latencies.append(sent - arrived)
            metrics.stream_latency.observe(latencies[-1])

    try:
        while True:
            if waiting is None:
                try:
                    async with asyncio.timeout(settings.STREAM_IDLE_TIMEOUT_S):
                        waiting = await inbox.get()
                except TimeoutError:
                    raise StreamClosed(4408, f"nothing received for "
                                             f"{settings.STREAM_IDLE_TIMEOUT_S:g} s") from None
            message, arrived = waiting
            waiting = None
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("bytes") is not None:
                samples, arrivals, waiting, bad = _gather(message, arrived, inbox, params)
                chunks += len(arrivals)
                if samples is not None:
                    await send(await stream.push(samples), arrivals)
                if bad is not None:
                    raise bad  # after the audio sent before it
                continue
            if not _is_end(message.get("text")):
                raise StreamClosed(4400, 'text messages must be {"type": "end"}')
            await send(await stream.finish(), [arrived])
            await websocket.send_text(json.dumps({
                "type": "summary", "samples_in": stream.samples_in,
                "samples_out": stream.samples_out, "chunks": chunks,
                "seconds": round(time.monotonic() - started, 3),
                # Time from each message's arrival to its enhanced samples leaving, ms.
                "latency_ms": {"p50": _percentile_ms(latencies, 50),
                               "p99": _percentile_ms(latencies, 99)}}))
            await _close(websocket, 1000, "done")
            return
    finally:
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
    if text is None:
        return False
    if text.strip() == "end":
        return True
    try:
        return json.loads(text) == {"type": "end"}
    except ValueError:
        return False


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the client left first
        await websocket.close(code, reason.encode()[:123].decode(errors="ignore"))


class StreamCount:
    """Open streams, counted on the event loop (no lock needed)."""

    def __init__(self) -> None:
        self.open = 0

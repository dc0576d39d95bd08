"""A client for the service's live stream, ``WebSocket /enhance/stream``.

    import soundfile as sf
    from enhancer.apps.client import stream_enhance_sync

    audio, rate = sf.read("audio_samples/noisy_speech_16000.wav", dtype="float32")
    chunks = (audio[i:i + 160] for i in range(0, len(audio), 160))  # 10 ms each
    enhanced = np.concatenate(list(stream_enhance_sync(
        "ws://127.0.0.1:8080/enhance/stream", chunks, sample_rate=rate)))

``stream_enhance`` is the same as an async generator. Chunks are sent while enhanced audio
comes back, so the output flows as the input does; with ``realtime=True`` chunks are sent at
the pace of the audio, as a microphone would. Uses the ``websockets`` package.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import numpy as np

# Jobs (``/jobs``), for recordings too long for one request: see enhancer.apps.jobs_client.
from enhancer.apps.jobs_client import JobError as JobError
from enhancer.apps.jobs_client import cancel_job as cancel_job
from enhancer.apps.jobs_client import download_result as download_result
from enhancer.apps.jobs_client import job_status as job_status
from enhancer.apps.jobs_client import submit_job as submit_job
from enhancer.apps.jobs_client import wait_for_job as wait_for_job
from enhancer.audio.encode import quantize
from enhancer.audio.formats import RAW_FORMATS
from enhancer.close_codes import CloseCode
from enhancer.errors import EnhancerError


class StreamError(EnhancerError):
    """The server closed the stream with an error code; ``code`` and ``reason`` say why."""

    def __init__(self, code: int, reason: str) -> None:
        code = int(code)  # the number, whether it is one of CloseCode or not
        super().__init__(f"the stream was closed with code {code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass
class StreamSummary:
    """What the server says at the end of a stream."""

    samples_in: int = 0
    samples_out: int = 0
    chunks: int = 0
    seconds: float = 0.0
    latency_ms: dict[str, float] | None = None  # p50 and p99 of the server's time per chunk

    def update(self, message: dict[str, Any]) -> None:
        """Take the figures of the server's closing ``{"type": "summary", ...}``."""
        for key in ("samples_in", "samples_out", "chunks", "seconds", "latency_ms"):
            setattr(self, key, message.get(key, getattr(self, key)))


def stream_url(url: str, sample_rate: int, channels: int = 1, encoding: str = "f32le",
               model: str | None = None, api_key: str | None = None,
               atten_lim_db: float | None = None) -> str:
    """``url`` (``ws://host:port/enhance/stream``) with the stream's parameters."""
    query: dict[str, Any] = {"sample_rate": sample_rate, "channels": channels,
                             "encoding": encoding}
    if model:
        query["model"] = model
    if atten_lim_db is not None:
        query["atten_lim_db"] = atten_lim_db
    if api_key:
        query["api_key"] = api_key
    return f"{url}?{urlencode(query)}"


def _encode(chunk: np.ndarray, encoding: str) -> bytes:
    dtype, scale = RAW_FORMATS[encoding]
    if scale is None:
        return np.ascontiguousarray(chunk, dtype=dtype).tobytes()
    return quantize(chunk, scale, np.dtype(dtype).type)[0].tobytes()


def _decode(data: bytes, encoding: str, channels: int) -> np.ndarray:
    dtype, scale = RAW_FORMATS[encoding]
    samples = np.frombuffer(data, dtype=dtype).reshape(-1, channels)
    samples = samples.astype(np.float32) if scale is None else samples / np.float32(scale)
    return samples[:, 0] if channels == 1 else samples


async def stream_enhance(url: str, chunks: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
                         sample_rate: int, channels: int = 1, encoding: str = "f32le",
                         model: str | None = None, api_key: str | None = None,
                         realtime: bool = False, summary: StreamSummary | None = None,
                         atten_lim_db: float | None = None) -> AsyncIterator[np.ndarray]:
    """Stream ``chunks`` (float ``[n]`` or ``[n, channels]``) through the service; yield the
    enhanced audio as it comes back, in all as many samples as were sent.

    Raises
    ------
    StreamError
        The server closed the stream with an error (bad parameters or data, unknown model,
        a worker crash...): ``code`` and ``reason`` say which.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    address = stream_url(url, sample_rate, channels, encoding, model, api_key, atten_lim_db)
    async with connect(address, max_size=None, compression=None) as websocket:
        await _await_ready(websocket)

        async def send_all() -> None:
            started = time.monotonic()
            sent = 0
            async for chunk in _aiter(chunks):
                await websocket.send(_encode(chunk, encoding))
                sent += len(chunk)
                if realtime:  # at the pace of the audio, as a microphone sends it
                    await asyncio.sleep(max(0.0, started + sent / sample_rate - time.monotonic()))
            await websocket.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send_all())
        try:
            while True:
                try:
                    message = await websocket.recv()
                except ConnectionClosed as closed:
                    raise _stream_error(closed) from None
                if isinstance(message, bytes):
                    yield _decode(message, encoding, channels)
                    continue
                if summary is not None:
                    summary.update(json.loads(message))
                break
            await sender
        finally:
            sender.cancel()


async def _await_ready(websocket: Any) -> None:
    """Wait for the server's ``{"type": "ready"}``, or the close that refused the stream."""
    from websockets.exceptions import ConnectionClosed

    try:
        ready = json.loads(await websocket.recv())
    except ConnectionClosed as closed:
        raise _stream_error(closed) from None
    if ready.get("type") != "ready":
        raise StreamError(CloseCode.PROTOCOL_ERROR, f"unexpected first message {ready!r}")


def _stream_error(closed: Exception) -> StreamError:
    received = getattr(closed, "rcvd", None)
    if received is None:
        return StreamError(CloseCode.ABNORMAL, "the connection was lost")
    return StreamError(received.code, received.reason)


async def _aiter(chunks: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
                 ) -> AsyncIterator[np.ndarray]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(0)  # let replies in between chunks


def stream_enhance_sync(url: str, chunks: Iterable[np.ndarray], sample_rate: int,
                        channels: int = 1, encoding: str = "f32le", model: str | None = None,
                        api_key: str | None = None, realtime: bool = False,
                        summary: StreamSummary | None = None,
                        atten_lim_db: float | None = None) -> Iterator[np.ndarray]:
    """The blocking form of :func:`stream_enhance`, for code without an event loop."""
    import queue

    results: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=64)

    async def produce() -> None:
        try:
            async for enhanced in stream_enhance(url, chunks, sample_rate, channels, encoding,
                                                 model, api_key, realtime, summary,
                                                 atten_lim_db):
                results.put(("chunk", enhanced))
        except BaseException as exc:  # handed to the caller's thread
            results.put(("error", exc))
        else:
            results.put(("end", None))

    thread = threading.Thread(target=asyncio.run, args=(produce(),), daemon=True)
    thread.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "chunk":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        thread.join(timeout=5)


# Frames per message a client sends: 64k samples, well under the service's message limit.
MESSAGE_FRAMES = 1 << 16


class RemoteStream:
    """One stream through a running service, with :class:`EnhancerStream`'s interface:
    ``await push(chunk)`` returns the enhanced audio that has come back so far,
    ``await finish()`` the rest. Used by the CLI's ``--server``."""

    def __init__(self, address: str, channels: int, encoding: str, realtime: bool,
                 sample_rate: int) -> None:
        self.address, self.channels, self.encoding = address, channels, encoding
        self.realtime, self.sample_rate = realtime, sample_rate
        self.summary = StreamSummary()
        self._websocket: Any = None
        self._received: list[np.ndarray] = []
        self._reader: asyncio.Task[None] | None = None
        self._sent = 0
        self._started = 0.0

    async def _open(self) -> None:
        from websockets.asyncio.client import connect

        try:
            self._websocket = await connect(self.address, max_size=None, compression=None)
        except OSError as exc:
            raise StreamError(CloseCode.ABNORMAL, f"cannot reach {self.address}: {exc}") from None
        await _await_ready(self._websocket)
        self._reader = asyncio.create_task(self._read())
        self._started = time.monotonic()

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self._websocket:
                if isinstance(message, bytes):
                    self._received.append(_decode(message, self.encoding, self.channels))
                else:
                    self.summary.update(json.loads(message))
                    return
        except ConnectionClosed:
            pass
        code = self._websocket.close_code
        if code not in (CloseCode.NORMAL, None):
            raise StreamError(code, self._websocket.close_reason or "")

    def _take(self) -> np.ndarray:
        if self._reader is not None and self._reader.done() and self._reader.exception():
            raise self._reader.exception()  # type: ignore[misc]
        parts, self._received = self._received, []
        if not parts:
            return np.zeros((0, self.channels), np.float32)
        joined = np.concatenate(parts)
        return joined.reshape(-1, self.channels)

    async def push(self, chunk: np.ndarray) -> np.ndarray:
        if self._websocket is None:
            await self._open()
        for start in range(0, len(chunk), MESSAGE_FRAMES):  # within the service's limit
            await self._send(_encode(chunk[start:start + MESSAGE_FRAMES], self.encoding))
        self._sent += len(chunk)
        if self.realtime:  # at the pace of the audio, as a microphone sends it
            due = self._started + self._sent / self.sample_rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        return self._take()

    async def finish(self) -> np.ndarray:
        if self._websocket is None:
            await self._open()
        await self._send(json.dumps({"type": "end"}))
        assert self._reader is not None
        try:
            await self._reader
        finally:
            await self._websocket.close()
        return self._take()

    async def _send(self, message: bytes | str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._websocket.send(message)
        except ConnectionClosed as closed:
            if self._reader is not None:  # it has the reason; retrieve it so it is not lost
                await asyncio.gather(self._reader, return_exceptions=True)
            raise _stream_error(closed) from None


class RemoteEnhancer:
    """A running service, to stream files through (``enhance --server URL``).

    Offers what the CLI's block streaming needs of an ``AudioEnhancer``: ``open_stream`` and
    the figures for its progress bar.
    """

    model_sample_rate = 48000  # only sizes the blocks read; the server resamples itself

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 realtime: bool = False, encoding: str = "f32le") -> None:
        self.url = stream_endpoint(url)
        self.model, self.api_key = model, api_key
        self.realtime, self.encoding = realtime, encoding

    def open_stream(self, sample_rate: int, channels: int = 1,
                    atten_lim_db: float | None = None,
                    whole_cells: bool = False) -> RemoteStream:
        """A stream to the service (``whole_cells`` is the server's business: it streams
        every chunk through the model's stream step)."""
        address = stream_url(self.url, sample_rate, channels, self.encoding, self.model,
                             self.api_key, atten_lim_db)
        return RemoteStream(address, channels, self.encoding, self.realtime, sample_rate)

    def frames_for(self, num_samples: int, sample_rate: int, channels: int = 1) -> int:
        return -(-num_samples * self.model_sample_rate // sample_rate) * channels // 512

    def __enter__(self) -> RemoteEnhancer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def stream_endpoint(url: str) -> str:
    """``ws://host:port/enhance/stream`` from a server's address (``http://host:port`` or
    ``host:port`` will do)."""
    if url.startswith(("http://", "https://")):
        url = "ws" + url[len("http"):]
    elif not url.startswith(("ws://", "wss://")):
        url = "ws://" + url
    return url if url.rstrip("/").endswith("/enhance/stream") else (
        url.rstrip("/") + "/enhance/stream")

"""A live stream's parameters, read from its query, and its PCM messages in and out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from enhancer.audio.encode import quantize
from enhancer.audio.formats import RAW_FORMATS, check_sample_rate, check_samples
from enhancer.close_codes import CloseCode
from enhancer.errors import InvalidAudio
from enhancer.model.attenuation import MAX_ATTEN_LIM_DB, attenuation_floor
from service.enhance_request import strict_float, strict_int

MAX_CHANNELS_PER_STREAM = 8
# The query parameters a stream may have (api_key is checked before the others).
KNOWN_PARAMETERS = frozenset({"sample_rate", "encoding", "channels", "model", "api_key",
                              "atten_lim_db"})


class StreamClosed(Exception):
    """End the stream with this close code and reason."""

    def __init__(self, code: CloseCode, reason: str) -> None:
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
    def from_query(cls, items: Iterable[tuple[str, str]]) -> StreamParameters:
        """The parameters from the query's ``(name, value)`` pairs: each known name at most
        once, numbers in ASCII digits, as ``POST /enhance`` reads them."""
        query = _once_each(items)
        if "sample_rate" not in query:
            raise StreamClosed(CloseCode.BAD_REQUEST, "sample_rate is required")
        try:
            rate = check_sample_rate(strict_int(query["sample_rate"]))
            channels = strict_int(query.get("channels", "1"))
        except (TypeError, ValueError) as exc:
            raise StreamClosed(CloseCode.BAD_REQUEST, str(exc) if "between" in str(exc)
                               else "sample_rate and channels must be integers in ASCII "
                                    "digits") from None
        if not 1 <= channels <= MAX_CHANNELS_PER_STREAM:
            raise StreamClosed(CloseCode.BAD_REQUEST, f"channels must be 1 to "
                                                      f"{MAX_CHANNELS_PER_STREAM}, got {channels}")
        encoding = query.get("encoding", "f32le")
        if encoding not in RAW_FORMATS:
            raise StreamClosed(CloseCode.UNSUPPORTED_ENCODING,
                               f"encoding must be one of {', '.join(RAW_FORMATS)}, "
                               f"got {encoding!r}")
        return cls(rate, encoding, channels, query.get("model") or None,
                   _atten_lim_db(query.get("atten_lim_db")))

    def decode(self, data: bytes) -> np.ndarray:
        """An audio message's samples, float32 ``[frames, channels]``."""
        dtype, scale = RAW_FORMATS[self.encoding]
        frame_bytes = np.dtype(dtype).itemsize * self.channels
        if len(data) % frame_bytes:
            raise StreamClosed(CloseCode.BAD_AUDIO,
                               f"{len(data)} bytes is not a whole number of "
                               f"{self.channels}-channel {self.encoding} frames")
        samples = np.frombuffer(data, dtype=dtype).reshape(-1, self.channels)
        samples = (samples.astype(np.float32) if scale is None
                   else (samples / np.float32(scale)).astype(np.float32))
        try:  # the library's rule (finite, at most MAX_SAMPLE_MAGNITUDE), before the state
            return check_samples(samples, "the chunk")
        except InvalidAudio as exc:
            raise StreamClosed(CloseCode.BAD_AUDIO, str(exc)) from None

    def encode(self, samples: np.ndarray) -> bytes:
        """Enhanced samples as a message, in the stream's encoding."""
        dtype, scale = RAW_FORMATS[self.encoding]
        if scale is None:
            return samples.astype(dtype).tobytes()
        return quantize(samples, scale, np.dtype(dtype).type)[0].tobytes()


def _once_each(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The query as a dict, refusing unknown names and names given twice (which would
    otherwise quietly keep one of the values)."""
    query: dict[str, str] = {}
    for name, value in items:
        if name not in KNOWN_PARAMETERS:
            raise StreamClosed(CloseCode.BAD_REQUEST, f"unknown parameter {name[:40]!r}")
        if name in query:
            raise StreamClosed(CloseCode.BAD_REQUEST, f"parameter {name!r} is given twice")
        query[name] = value
    return query


def _atten_lim_db(limit: str | None) -> float | None:
    """The strength limit in dB; omitted or empty: none."""
    try:
        atten_lim_db = strict_float(limit) if limit else None
        attenuation_floor(atten_lim_db)
    except (ValueError, InvalidAudio):
        raise StreamClosed(CloseCode.BAD_REQUEST, f"atten_lim_db must be a number of dB from 0 "
                                                  f"to {MAX_ATTEN_LIM_DB:g}, got {limit!r}"
                           ) from None
    return atten_lim_db

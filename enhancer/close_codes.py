"""The close codes of the live stream, ``WebSocket /enhance/stream``: the service sends them,
the client (:mod:`enhancer.apps.client`) reads them.

The 1000s are the WebSocket standard's (RFC 6455, 7.4.1); the 4000s are the service's own,
its HTTP status plus 4000, so ``4404`` reads as "404, not found".
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Why a stream ended; an ``int``, so it goes straight into a close frame."""

    # The stream ended as asked: the client sent "end" and got the tail and the summary.
    NORMAL = 1000
    # Never sent: the client's own word for a first message that is not "ready".
    PROTOCOL_ERROR = 1002
    # Never sent: the connection dropped without a close frame.
    ABNORMAL = 1006
    # A message over MAX_STREAM_MESSAGE_KB (sent by uvicorn, which reads the frames).
    MESSAGE_TOO_BIG = 1009
    # A worker died holding a chunk, or the model failed: this stream ends, the service not.
    SERVER_ERROR = 1011
    # The service already holds MAX_STREAMS streams.
    TRY_AGAIN_LATER = 1013
    # A bad query parameter, or a text message other than "end" (over 256 characters it is
    # refused unparsed, so no nesting depth can reach the JSON parser).
    BAD_REQUEST = 4400
    # The API key is missing or wrong.
    UNAUTHORIZED = 4401
    # The model asked for is not served.
    UNKNOWN_MODEL = 4404
    # Nothing received for STREAM_IDLE_TIMEOUT_S, or the client read nothing for
    # STREAM_SEND_TIMEOUT_S (so the server never buffers for it; a client whose buffer is so
    # full that the close cannot be sent has its connection aborted instead).
    TIMEOUT = 4408
    # An encoding other than f32le or s16le.
    UNSUPPORTED_ENCODING = 4415
    # Audio that is not whole frames, or holds NaN or infinite samples, or samples over
    # MAX_SAMPLE_MAGNITUDE in magnitude (enhancer.audio.formats), which the model cannot take.
    BAD_AUDIO = 4422

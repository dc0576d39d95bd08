"""The HTTP service's settings: the library's :class:`~enhancer.config.EngineSettings` and
everything HTTP (address, key, limits, timeouts, streams), read from environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from enhancer.audio.formats import Budget
from enhancer.config import EngineSettings, SettingsError, read_settings

__all__ = ["Settings", "SettingsError", "load_settings"]


class Settings(EngineSettings):
    """Service settings; each field is read from the environment variable of the same name."""

    APP_INTERFACE: str = Field("127.0.0.1", description="address the server listens on")
    APP_PORT: Annotated[int, Field(ge=1, le=65535)] = Field(8080, description="TCP port")
    MAX_UPLOAD_MB: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        256.0, description="largest upload accepted (10 minutes of 48 kHz stereo 16-bit WAV "
                           "is 115 MB); its bytes also count against MAX_INFLIGHT_MB")
    MAX_AUDIO_SECONDS: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        3600.0, description="longest audio a request may hold, seconds; checked from the "
                            "header before decoding (413). The CLI streams any length")
    MAX_DECODED_SAMPLES: Annotated[int, Field(ge=1)] = Field(
        86_400_000, description="most samples a request may decode to: frames x channels at "
                                "the larger of its rate and the model's (30 min of 48 kHz "
                                "mono, 346 MB as float32); checked from the header (413)")
    MAX_PENDING_REQUESTS: Annotated[int, Field(ge=1)] = Field(
        64, description="requests being enhanced at once (bodies fully received) before 503")
    MAX_INFLIGHT_MB: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        2048.0, description="memory that requests in flight may hold, estimated from each "
                            "upload's size and decoded length; beyond it, 503")
    REQUEST_TIMEOUT_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        120.0, description="a request still running after this many seconds gets 504")
    HEADER_TIMEOUT_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        10.0, description="a client must send a request's headers within this many seconds")
    BODY_TIMEOUT_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        10.0, description="longest pause between two parts of an upload before 408")
    MIN_UPLOAD_KBPS: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        64.0, description="slowest average upload rate accepted after the first "
                          "BODY_TIMEOUT_S seconds, kB/s; slower uploads get 408")
    WRITE_TIMEOUT_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        30.0, description="a client that reads none of a response for this long is "
                          "disconnected, freeing the response")
    KEEP_ALIVE_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        5.0, description="an idle connection is closed after this many seconds")
    SHUTDOWN_TIMEOUT_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        10.0, description="on SIGTERM, requests in flight get this long to finish")
    FRONTEND_PROCESSES: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="HTTP front-end processes sharing the port, each with "
                       "NUM_PROCESSES / FRONTEND_PROCESSES model workers; more than one "
                       "only pays on machines with many cores")
    MAX_CONNECTIONS: Annotated[int, Field(ge=1)] = Field(
        1000, description="open connections at once before 503; kept below the open-file "
                          "limit, which is raised to its hard maximum at start")
    MAX_STREAMS: Annotated[int, Field(ge=1)] = Field(
        64, description="live streams at once on /enhance/stream; beyond it a new stream is "
                        "closed with code 1013")
    STREAM_IDLE_TIMEOUT_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        30.0, description="a stream that sends nothing for this long is closed (4408)")
    STREAM_SEND_TIMEOUT_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        10.0, description="a stream whose client reads nothing for this long is closed "
                          "(4408), so the server never buffers more than a little for it")
    MAX_STREAM_MESSAGE_KB: Annotated[int, Field(ge=1)] = Field(
        1024, description="largest WebSocket message accepted, kB (1 s of 48 kHz stereo "
                          "float32 is 384 kB); larger ones close the stream (1009)")
    API_KEY: str | None = Field(None, description="when set, /enhance, /enhance/stream and "
                                                  "/metrics need it (header X-API-Key)")

    @field_validator("API_KEY")
    @classmethod
    def _key_is_usable(cls, key: str | None) -> str | None:
        if key is None:
            return None
        if not key:
            raise ValueError("must not be empty (unset it to run without a key)")
        if not all(33 <= ord(c) <= 126 for c in key):
            raise ValueError("must be printable ASCII without spaces, so a client can send "
                             "it in a header")
        return key

    @property
    def budget(self) -> Budget:
        """The per-request limits on audio, checked from its header before decoding."""
        return Budget(max_seconds=self.MAX_AUDIO_SECONDS, max_channels=self.MAX_CHANNELS,
                      max_samples=self.MAX_DECODED_SAMPLES)


def load_settings() -> Settings:
    """Read the settings, turning a validation error into one message naming each variable."""
    return read_settings(Settings)

"""The HTTP service's settings: the library's :class:`~enhancer.config.EngineSettings` and
everything HTTP (address, key, limits, timeouts, streams), read from environment variables."""

from __future__ import annotations

import os
from pathlib import Path
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
    MAX_HEADER_KB: Annotated[int, Field(ge=1, le=1024)] = Field(
        32, description="largest request headers accepted (request line and all fields), "
                        "kB; longer ones get 431, counted as they arrive, so a connection "
                        "holds at most this much of them")
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

    API_KEYS: str | None = Field(None, description="several keys, each with a name: "
                                 "`name:key,name:key`; any of them (or API_KEY, named "
                                 "default) opens what API_KEY does, and a job belongs to "
                                 "the key that made it")
    JOBS_DIR: Path | None = Field(None, description="where jobs' records (SQLite) and files "
                                  "are kept; unset: $XDG_DATA_HOME/enhancer/jobs "
                                  "(~/.local/share/enhancer/jobs)")
    JOBS_DATABASE_URL: str | None = Field(None, description="jobs' records in this database "
                                          "instead (postgresql://user@host/db); the files "
                                          "stay in JOBS_DIR, which every server must mount")
    JOB_MAX_AUDIO_SECONDS: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        43_200.0, description="longest audio a job may hold, seconds (413)")
    JOBS_MAX_DISK_MB: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        10_240.0, description="disk that jobs' inputs and results may take; a job that "
                              "would pass it is refused (507)")
    JOBS_MAX_QUEUED: Annotated[int, Field(ge=1)] = Field(
        100, description="jobs queued or running at once before new ones get 503")
    JOB_RETENTION_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        86_400.0, description="an ended job and its files are deleted this long after it "
                              "ends")
    JOB_LEASE_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        60.0, description="a running job whose runner has not reported for this long is "
                          "taken over by another (a server on another machine that died)")
    JOB_CALLBACK_ATTEMPTS: Annotated[int, Field(ge=1, le=20)] = Field(
        5, description="tries to deliver a job's callback_url, 1, 2, 4... s apart")
    JOBS_WEBHOOK_SECRET: str | None = Field(None, description="without API keys, the secret "
                                            "callbacks are signed with (with keys: the "
                                            "job's key)")

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

    @field_validator("API_KEYS")
    @classmethod
    def _keys_are_named(cls, keys: str | None) -> str | None:
        if keys is not None:
            parse_api_keys(keys)
        return keys

    @property
    def api_keys(self) -> dict[str, str]:
        """Every key by its name: API_KEY's is ``default``."""
        named = parse_api_keys(self.API_KEYS) if self.API_KEYS else {}
        return {**({"default": self.API_KEY} if self.API_KEY else {}), **named}

    @property
    def jobs_dir(self) -> Path:
        if self.JOBS_DIR is not None:
            return self.JOBS_DIR
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "enhancer" / "jobs"

    @property
    def budget(self) -> Budget:
        """The per-request limits on audio, checked from its header before decoding."""
        return Budget(max_seconds=self.MAX_AUDIO_SECONDS, max_channels=self.MAX_CHANNELS,
                      max_samples=self.MAX_DECODED_SAMPLES)


def parse_api_keys(text: str) -> dict[str, str]:
    """``name:key,name:key`` as a dict; a ValueError says what is wrong."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, colon, key = item.partition(":")
        if not colon or not name or not key:
            raise ValueError(f"each key must be name:key, got {item.split(':')[0]!r}...")
        if not all(33 <= ord(c) <= 126 for c in key):
            raise ValueError(f"key {name!r} must be printable ASCII without spaces")
        keys[name] = key
    return keys


def load_settings() -> Settings:
    """Read the settings, turning a validation error into one message naming each variable."""
    return read_settings(Settings)

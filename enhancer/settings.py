"""Every knob of the service and the CLI, read from environment variables (and ``.env``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from audio_manipulations import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Budget
from enhancer.paths import DENOISER_MODEL, PROJECT_DIR, SHIPPED_MODELS_DIR

if TYPE_CHECKING:
    from enhancer.ray_backend import RayOptions

# The speech denoiser: a first run should enhance, not just make the audio louder.
DEFAULT_MODEL_PATH = DENOISER_MODEL


class Settings(BaseSettings):
    """Service settings; each field is read from the environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False,
                                      protected_namespaces=())

    APP_INTERFACE: str = Field("127.0.0.1", description="address the server listens on")
    APP_PORT: Annotated[int, Field(ge=1, le=65535)] = Field(8080, description="TCP port")
    TF_MODEL_PATH: Path = Field(DEFAULT_MODEL_PATH,
                                description="the default .tflite model; relative paths are "
                                            "taken from the project folder")
    DESIRED_SAMPLE_RATE: Annotated[int, Field(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)] = Field(
        48000, description="the rate a model without a card runs at, Hz")
    MODELS_DIR: Path = Field(SHIPPED_MODELS_DIR, description="folder of further models: every "
                             ".tflite with a model card (.json) beside it is served")
    NUM_PROCESSES: Annotated[int, Field(ge=0, le=256)] = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="worker processes; 0 runs the model inline in the server process")
    MAX_UPLOAD_MB: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        256.0, description="largest upload accepted (10 minutes of 48 kHz stereo 16-bit WAV "
                           "is 115 MB); its bytes also count against MAX_INFLIGHT_MB")
    MAX_AUDIO_SECONDS: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        3600.0, description="longest audio a request may hold, seconds; checked from the "
                            "header before decoding (413). The CLI streams any length")
    MAX_CHANNELS: Annotated[int, Field(ge=1, le=65535)] = Field(
        16, description="most channels a request (or a file given to the CLI) may hold (413)")
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
    MIN_BLOCK_DEADLINE_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        5.0, description="a worker holding a segment longer than this (plus 50 times the "
                         "model's measured time for it) is killed and replaced; the segment "
                         "runs once more elsewhere")
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

    BACKEND: Literal["local", "ray"] = Field(
        "local", description="where the model runs: local (worker processes, or inline with "
                             "NUM_PROCESSES=0) or ray (Ray Serve replicas; needs "
                             "requirements-ray.txt)")
    RAY_ADDRESS: str = Field("", description="BACKEND=ray: the Ray cluster (host:6379, or "
                             "auto); empty: the machine's running cluster, else a new one")
    RAY_REPLICAS: Annotated[int, Field(ge=1, le=1024)] = Field(
        1, description="BACKEND=ray: replicas per model (the initial count when autoscaling)")
    RAY_CPUS_PER_REPLICA: Annotated[float, Field(gt=0, le=256, allow_inf_nan=False)] = Field(
        1.0, description="BACKEND=ray: CPUs each replica reserves (fractions pack several "
                         "on one CPU)")
    RAY_MIN_REPLICAS: Annotated[int, Field(ge=0, le=1024)] = Field(
        0, description="BACKEND=ray: autoscaling lower bound (with RAY_MAX_REPLICAS)")
    RAY_MAX_REPLICAS: Annotated[int, Field(ge=0, le=1024)] = Field(
        0, description="BACKEND=ray: autoscaling upper bound; 0 keeps RAY_REPLICAS fixed")
    RAY_MAX_ONGOING_REQUESTS: Annotated[int, Field(ge=1, le=1000)] = Field(
        2, description="BACKEND=ray: segments a replica holds at once")
    RAY_MAX_QUEUED_REQUESTS: Annotated[int, Field(ge=-1)] = Field(
        -1, description="BACKEND=ray: segments waiting for a replica before requests get 503 "
                        "with Retry-After; -1: no limit")
    RAY_DEPLOY: bool = Field(True, description="BACKEND=ray: deploy one Serve application "
                             "per model (and delete it on exit); false: use the ones "
                             "deploy/serve_config.yaml deployed")

    @field_validator("RAY_MAX_REPLICAS")
    @classmethod
    def _ray_bounds(cls, most: int, info: ValidationInfo) -> int:
        least = info.data.get("RAY_MIN_REPLICAS", 0)
        if most and least > most:
            raise ValueError(f"must be at least RAY_MIN_REPLICAS ({least}), or 0 for a fixed "
                             f"RAY_REPLICAS")
        return most

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

    @field_validator("MODELS_DIR")
    @classmethod
    def _models_dir_exists(cls, folder: Path) -> Path:
        if not _from_project(folder).is_dir():
            raise ValueError(f"folder {_from_project(folder)} does not exist")
        return folder

    @property
    def ray_options(self) -> RayOptions | None:
        """The Ray backend's options when ``BACKEND=ray``, else None (Ray is not imported)."""
        if self.BACKEND != "ray":
            return None
        from enhancer.ray_backend import RayOptions

        return RayOptions.from_settings(self)

    @property
    def budget(self) -> Budget:
        """The per-request limits on audio, checked from its header before decoding."""
        return Budget(max_seconds=self.MAX_AUDIO_SECONDS, max_channels=self.MAX_CHANNELS,
                      max_samples=self.MAX_DECODED_SAMPLES)

    @property
    def model_path(self) -> Path:
        return _from_project(self.TF_MODEL_PATH)

    @property
    def models_dir(self) -> Path:
        return _from_project(self.MODELS_DIR)


def _from_project(path: Path) -> Path:
    return path if path.is_absolute() else PROJECT_DIR / path


def load_settings() -> Settings:
    """Read the settings, turning a validation error into one message naming each variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from None


class SettingsError(ValueError):
    """A setting read from the environment is invalid."""


def settings_table() -> str:
    """Every setting as a Markdown table (name, default, meaning), for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "number of cores"
        elif field.default is None:
            default = "unset"
        elif isinstance(field.default, Path):
            default = f"`{_shown_path(field.default)}`"
        elif isinstance(field.default, bool):
            default = f"`{str(field.default).lower()}`"
        elif isinstance(field.default, float) and field.default.is_integer():
            default = f"`{int(field.default)}`"
        else:
            default = f"`{field.default}`" if field.default != "" else "empty"
        rows.append(f"| `{name}` | {default} | {field.description or ''} |")
    return "\n".join(rows) + "\n"


def _shown_path(path: Path) -> str:
    """A default path as the README shows it: from the project folder."""
    try:
        return str(path.relative_to(PROJECT_DIR))
    except ValueError:
        return str(path)


README_MARKERS = ("<!-- settings:start -->\n", "<!-- settings:end -->")


def update_readme(readme: Path = PROJECT_DIR / "README.md") -> bool:
    """Put :func:`settings_table` between the README's markers; True if it changed."""
    start, end = README_MARKERS
    text = readme.read_text()
    before, rest = text.split(start, 1)
    updated = before + start + settings_table() + rest[rest.index(end):]
    if updated != text:
        readme.write_text(updated)
    return updated != text


if __name__ == "__main__":
    # python -m enhancer.settings: refresh the README's settings table.
    print("README.md updated" if update_readme() else "README.md already current")

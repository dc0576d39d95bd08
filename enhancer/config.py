"""The library's own configuration: which models run, where and on how many processes.

Read from environment variables (and ``.env``) by the ``enhance`` command line and extended by
the HTTP service's :class:`service.settings.Settings`; the library itself takes plain
arguments (``AudioEnhancer(model_path, num_processes, ...)``), so nothing below the
applications needs this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from enhancer.audio.formats import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from enhancer.paths import DENOISER_MODEL, PROJECT_DIR, SHIPPED_MODELS_DIR

if TYPE_CHECKING:
    from enhancer.backends.ray.deployment import RayOptions

# The speech denoiser: a first run should enhance, not just make the audio louder.
DEFAULT_MODEL_PATH = DENOISER_MODEL


class EngineSettings(BaseSettings):
    """The models and the backend; each field is read from the variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False,
                                      protected_namespaces=())

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
    MAX_CHANNELS: Annotated[int, Field(ge=1, le=65535)] = Field(
        16, description="most channels a request (or a file given to the CLI) may hold (413)")
    MIN_BLOCK_DEADLINE_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        5.0, description="a worker holding a segment longer than this (plus 50 times the "
                         "model's measured time for it) is killed and replaced; the segment "
                         "runs once more elsewhere")
    HEARTBEAT_TIMEOUT_S: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        3.0, description="an idle worker that leaves its heartbeat (sent every 0.5 s) "
                         "unanswered this long is killed and replaced; /ready answers 503 "
                         "until its replacement has loaded")
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
        from enhancer.backends.ray.backend import RayOptions

        return RayOptions.from_settings(self)

    @property
    def model_path(self) -> Path:
        return _from_project(self.TF_MODEL_PATH)

    @property
    def models_dir(self) -> Path:
        return _from_project(self.MODELS_DIR)



def _from_project(path: Path) -> Path:
    return path if path.is_absolute() else PROJECT_DIR / path



class SettingsError(ValueError):
    """A setting read from the environment is invalid."""


S = TypeVar("S", bound=BaseSettings)


def read_settings(kind: type[S]) -> S:
    """Read ``kind`` from the environment, turning a validation error into one message."""
    try:
        return kind()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from None

"""Every knob of the service and the CLI, read from environment variables (and ``.env``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from audio_manipulations import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from enhancer.paths import DENOISER_MODEL, PROJECT_DIR, SHIPPED_MODELS_DIR

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
    MAX_UPLOAD_MB: Annotated[float, Field(gt=0)] = Field(100.0,
                                                         description="largest upload accepted")
    MAX_PENDING_REQUESTS: Annotated[int, Field(ge=1)] = Field(
        64, description="requests waiting or running at once before 503")
    REQUEST_TIMEOUT_S: Annotated[float, Field(gt=0)] = Field(
        120.0, description="a request still running after this many seconds gets 504")
    API_KEY: str | None = Field(None, description="when set, /enhance needs X-API-Key")

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

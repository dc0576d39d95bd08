"""Speech enhancement with TFLite models on a pool of worker processes.

    from enhancer import AudioEnhancer

    if __name__ == "__main__":  # the workers are spawned: they re-import this script
        with AudioEnhancer("models/denoiser_48k.tflite") as enhancer:
            cleaned = enhancer.enhance(noisy, sample_rate=16000)

The public API is ``__all__`` below; everything else is internal and may move. Names are
imported on first use, so a spawned worker (which imports
``enhancer.backends.pool.worker_process``) loads only what it runs.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enhancer.apps.client import RemoteEnhancer, StreamError
    from enhancer.audio.formats import Budget
    from enhancer.audio.resample import convert_to_required_format
    from enhancer.audio_enhancer import AudioEnhancer
    from enhancer.config import EngineSettings
    from enhancer.errors import (
        EnhancerClosed,
        EnhancerError,
        InvalidAudio,
        ModelError,
        Overloaded,
        PoolBroken,
        TooLarge,
        UnknownModel,
        UnsupportedFormat,
        WorkerCrashed,
    )
    from enhancer.model.card import ModelCard
    from enhancer.registry import ModelRegistry
    from enhancer.stream import EnhancerStream

_DISTRIBUTION = "audio-enhancer"


def _version() -> str:
    """The installed distribution's version or, in a checkout that was never installed, the
    one its pyproject.toml declares."""
    try:
        return version(_DISTRIBUTION)
    except PackageNotFoundError:
        pass
    import tomllib

    from enhancer.paths import PROJECT_DIR

    try:
        with open(PROJECT_DIR / "pyproject.toml", "rb") as file:
            project = tomllib.load(file)["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "0+unknown"
    if project.get("name") != _DISTRIBUTION:  # the package was copied into another project
        return "0+unknown"
    return str(project.get("version", "0+unknown"))


__version__ = _version()

# Public name -> the module that defines it.
_HOMES = {
    "AudioEnhancer": "enhancer.audio_enhancer",
    "EnhancerStream": "enhancer.stream",
    "ModelRegistry": "enhancer.registry",
    "ModelCard": "enhancer.model.card",
    "EngineSettings": "enhancer.config",
    "Budget": "enhancer.audio.formats",
    "convert_to_required_format": "enhancer.audio.resample",
    "RemoteEnhancer": "enhancer.apps.client",
    "StreamError": "enhancer.apps.client",
    **{name: "enhancer.errors" for name in (
        "EnhancerError", "InvalidAudio", "UnsupportedFormat", "TooLarge", "UnknownModel",
        "ModelError", "WorkerCrashed", "PoolBroken", "Overloaded", "EnhancerClosed")},
}

__all__ = [
    "AudioEnhancer",
    "Budget",
    "EngineSettings",
    "EnhancerClosed",
    "EnhancerError",
    "EnhancerStream",
    "InvalidAudio",
    "ModelCard",
    "ModelError",
    "ModelRegistry",
    "Overloaded",
    "PoolBroken",
    "RemoteEnhancer",
    "StreamError",
    "TooLarge",
    "UnknownModel",
    "UnsupportedFormat",
    "WorkerCrashed",
    "__version__",
    "convert_to_required_format",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})

"""The models a service process serves: the default model and every carded model in a folder.

Each model gets its own ``AudioEnhancer`` (its own worker pool), started together and closed
together.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from enhancer.audio_enhancer import AudioEnhancer
from enhancer.errors import ModelError, UnknownModel
from enhancer.model.card import card_path_for

if TYPE_CHECKING:
    from enhancer.config import EngineSettings


class ModelRegistry:
    """Name → running ``AudioEnhancer``; names come from model cards (or the file's stem)."""

    def __init__(self, default_model: Path, models_dir: Path, num_processes: int,
                 default_sample_rate: int, **options: Any) -> None:
        self.enhancers: dict[str, AudioEnhancer] = {}
        paths = [default_model]
        if models_dir.is_dir():
            paths += sorted(p for p in models_dir.glob("*.tflite")
                            if card_path_for(p).is_file()
                            and p.resolve() != default_model.resolve())
        try:
            for path in paths:
                enhancer = AudioEnhancer(path, num_processes,
                                         model_sample_rate=default_sample_rate, **options)
                if enhancer.card.name in self.enhancers:
                    enhancer.close()
                    raise ModelError(f"two models are named {enhancer.card.name!r}: "
                                        f"{self.enhancers[enhancer.card.name].model_path} and "
                                        f"{path}")
                self.enhancers[enhancer.card.name] = enhancer
        except BaseException:
            self.close()
            raise
        self.default_name = next(iter(self.enhancers))

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> ModelRegistry:
        """Every model the settings ask for, each on its own pool."""
        return cls(settings.model_path, settings.models_dir, settings.NUM_PROCESSES,
                   settings.DESIRED_SAMPLE_RATE,
                   min_block_deadline_s=settings.MIN_BLOCK_DEADLINE_S,
                   heartbeat_timeout_s=settings.HEARTBEAT_TIMEOUT_S,
                   backend=settings.BACKEND, ray_options=settings.ray_options)

    @property
    def default(self) -> AudioEnhancer:
        return self.enhancers[self.default_name]

    def get(self, name: str | None) -> AudioEnhancer:
        """The named model's enhancer, or the default one for ``None``."""
        if name is None or name == "":
            return self.default
        try:
            return self.enhancers[name]
        except KeyError:
            raise UnknownModel(f"unknown model {name!r}; available models: "
                               f"{', '.join(self.enhancers)}") from None

    @property
    def names(self) -> list[str]:
        """Every served model's name, the default first."""
        return list(self.enhancers)

    def describe(self) -> list[dict]:
        return [{"name": name, "sample_rate": e.model_sample_rate,
                 "frame_length": e.frame_length, "hop_length": e.framing.hop_length,
                 "window": e.framing.window, "context_frames": e.framing.context,
                 # A stream's delay: a frame, and the model's own look-ahead.
                 "latency_ms": round(1000 * (e.frame_length + e.card.latency_samples)
                                     / e.model_sample_rate, 2),
                 "description": e.card.description,
                 "default": name == self.default_name}
                for name, e in self.enhancers.items()]

    @property
    def is_ready(self) -> bool:
        return all(e.is_ready for e in self.enhancers.values())

    @property
    def worker_count(self) -> int:
        return sum(len(e.worker_pids) for e in self.enhancers.values())

    @property
    def pending_sessions(self) -> int:
        """Sessions queued or running in every pool; 0 when nothing is left behind."""
        return sum(e.pending_sessions for e in self.enhancers.values())

    @property
    def worker_restarts(self) -> int:
        return sum(e.worker_restarts for e in self.enhancers.values())

    def close(self) -> None:
        for enhancer in self.enhancers.values():
            enhancer.close()

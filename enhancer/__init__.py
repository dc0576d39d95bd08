"""Speech enhancement with TFLite models on a pool of worker processes.

    from enhancer import AudioEnhancer

    with AudioEnhancer("models/denoiser_48k.tflite") as enhancer:
        cleaned = enhancer.enhance(noisy, sample_rate=16000)

Names are imported on first use, so a spawned worker (which imports ``enhancer.worker``)
loads only what it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enhancer.enhancer import AudioEnhancer
    from enhancer.errors import EnhancerError

__all__ = ["AudioEnhancer", "EnhancerError"]


def __getattr__(name: str) -> Any:
    if name == "AudioEnhancer":
        from enhancer.enhancer import AudioEnhancer

        return AudioEnhancer
    if name == "EnhancerError":
        from enhancer.errors import EnhancerError

        return EnhancerError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Enhance an audio file from the command line; also the library's classic entry point.

    python enhance_file.py --source-file audio_samples/noisy_speech_16000.wav \\
        --destination-file enhanced.wav

The same command is installed as ``enhance`` by ``pip install .``. The work is done in the
:mod:`enhancer` package: ``enhancer.apps.cli`` (this command), ``enhancer.apps.enhance_files``
(file IO), ``enhancer.audio_enhancer`` (``AudioEnhancer``), ``enhancer.backends.pool`` (the
worker processes).
``from enhance_file import AudioEnhancer`` still works. Nothing is imported at the top:
spawned workers re-import this script and should load only what they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enhancer.audio_enhancer import AudioEnhancer
    from enhancer.errors import EnhancerError

__all__ = ["AudioEnhancer", "EnhancerError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import enhancer  # itself lazy: the name's module is loaded now

        return getattr(enhancer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    import logging
    import sys

    from enhancer.apps.cli import run_cli

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    sys.exit(run_cli(prog="enhance_file.py"))

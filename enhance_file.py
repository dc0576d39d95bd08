"""Enhance an audio file from the command line; also the library's classic entry point.

    python enhance_file.py --source-file audio_samples/speech_48000.wav \\
        --destination-file enhanced.wav

The same command is installed as ``enhance`` by ``pip install .``. The work is done in the
:mod:`enhancer` package: ``enhancer.cli`` (this command), ``enhancer.files`` (file IO),
``enhancer.enhancer`` (``AudioEnhancer``), ``enhancer.pool`` (the worker processes).
"""

from enhancer.enhancer import AudioEnhancer
from enhancer.errors import EnhancerError

__all__ = ["AudioEnhancer", "EnhancerError"]

if __name__ == "__main__":
    import logging
    import sys

    from enhancer.cli import run_cli

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    sys.exit(run_cli(prog="enhance_file.py"))

"""Files: read and decode one, enhance it, write the result atomically; or a whole folder.

Every failure a user can cause becomes a one-line :class:`FileProblem`, which the CLI prints.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from audio_manipulations import AUDIO_SUFFIXES, DecodedAudio, decode_audio, encode_audio
from enhancer.enhancer import AudioEnhancer
from enhancer.errors import EnhancerError, InvalidAudio

# A progress bar only for inputs long enough to wait for (about 10 s at 48 kHz).
PROGRESS_MIN_FRAMES = 500


class FileProblem(EnhancerError):
    """A problem with a file given by the user, reported on one line."""


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it, so no half file is left."""
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_audio(source: Path, raw_format: str, sample_rate: int) -> DecodedAudio:
    """Read and decode ``source``, turning every failure into a one-line ``FileProblem``."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise FileProblem(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        return decode_audio(data, raw_format, sample_rate)
    except InvalidAudio as exc:
        raise FileProblem(f"{source}: {exc}") from None


def enhance_to_file(enhancer: AudioEnhancer, audio: DecodedAudio, destination: Path,
                    show_progress: bool = True) -> int:
    """Enhance ``audio`` and write it, in its own format, to ``destination``.

    Returns the number of samples clipped to the integer range.
    """
    from tqdm import tqdm

    total = enhancer.frames_for(audio.samples.shape[0], audio.sample_rate, audio.channels)
    with tqdm(total=total, unit="frame", leave=False,
              disable=None if show_progress and total >= PROGRESS_MIN_FRAMES else True) as bar:
        enhanced = enhancer.enhance(audio.samples, audio.sample_rate, progress=bar.update)
    encoded, clipped = encode_audio(enhanced, audio.sample_rate, audio.format)
    try:
        write_atomically(destination, encoded)
    except OSError as exc:
        raise FileProblem(f"cannot write {destination}: {exc.strerror or exc}") from None
    return clipped


def enhance_folder(enhancer: AudioEnhancer, source: Path, destination: Path,
                   raw_format: str, sample_rate: int) -> int:
    """Enhance every audio file in ``source`` into ``destination``; return how many were skipped."""
    from tqdm import tqdm

    files = sorted(p for p in source.iterdir()
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    destination.mkdir(parents=True, exist_ok=True)
    skipped = 0
    for path in tqdm(files, unit="file", desc="files", disable=None):
        try:
            audio = load_audio(path, raw_format, sample_rate)
            clipped = enhance_to_file(enhancer, audio, destination / path.name,
                                      show_progress=False)
        except FileProblem as exc:
            skipped += 1
            tqdm.write(f"warning: skipped {exc}", file=sys.stderr)
            continue
        if clipped:
            tqdm.write(f"warning: {path.name}: {clipped} samples clipped to the integer range",
                       file=sys.stderr)
    return skipped

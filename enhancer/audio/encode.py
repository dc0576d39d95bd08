"""Writing audio: in the format it came in, integers saturated, in blocks or at once.

The public names are also in :mod:`audio_manipulations`, which owns the formats themselves.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

import numpy as np

from enhancer.audio.formats import INT_SUBTYPE_SCALE, RAW_FORMATS, AudioFormat

if TYPE_CHECKING:
    import soundfile


def quantize(samples: np.ndarray, full_scale: float, dtype: type = np.int64,
             shift: int = 0) -> tuple[np.ndarray, int]:
    """Round float samples to integers at ``full_scale``, saturating, into ``dtype``.

    ``shift`` moves the integers up that many bits (soundfile takes 24-bit audio as the top
    bits of int32). Works in blocks, in float32 where that is exact (a power-of-two scale
    below 2**24), so it never holds more than a block in a wider type. Returns the integers
    and how many samples were clipped.
    """
    out: np.ndarray = np.empty(samples.shape, dtype)
    work: type[np.floating] = np.float32 if full_scale <= 2**23 else np.float64
    low, high = -full_scale, full_scale - 1
    flat_in, flat_out = samples.reshape(-1), out.reshape(-1)
    clipped = 0
    for start in range(0, flat_in.shape[0], QUANTIZE_BLOCK):
        block: np.ndarray = flat_in[start:start + QUANTIZE_BLOCK].astype(work)
        block *= work(full_scale)
        np.rint(block, out=block)
        clipped += int(np.count_nonzero((block < low) | (block > high)))
        np.clip(block, low, high, out=block)
        target = flat_out[start:start + QUANTIZE_BLOCK]
        if shift:
            target[:] = block.astype(np.int64) << shift
        else:
            target[:] = block
    return out, clipped


# Samples converted at a time by quantize.
QUANTIZE_BLOCK = 1 << 18


def _storage(samples: np.ndarray, fmt: AudioFormat) -> tuple[np.ndarray, int]:
    """What to hand soundfile (or write raw) for ``samples`` in ``fmt``, and the clipped count.

    Float and lossy formats keep every value (a ×3 model may exceed 1.0); integer formats
    saturate at the range's ends rather than wrap.
    """
    if fmt.container == "raw":
        dtype, scale = RAW_FORMATS[fmt.subtype]
        if scale is None:
            return samples.astype(dtype, copy=False), 0
        return quantize(samples, scale, np.dtype(dtype).type)
    if fmt.subtype not in INT_SUBTYPE_SCALE:
        return samples.astype(np.float32, copy=False), 0
    # soundfile maps the full int16/int32 range onto the file's bit depth.
    if fmt.subtype == "PCM_16":
        return quantize(samples, INT_SUBTYPE_SCALE["PCM_16"], np.int16)
    shift = 32 - int(math.log2(INT_SUBTYPE_SCALE[fmt.subtype])) - 1
    return quantize(samples, INT_SUBTYPE_SCALE[fmt.subtype], np.int32, shift)


class AudioWriter:
    """Write float blocks to a binary file in ``fmt.output``, as :func:`encode_audio` would.

    Parameters
    ----------
    f : file
        Open for writing (and reading and seeking: containers rewrite their header).
    fmt : AudioFormat
        The input's format; the output is ``fmt.output``.
    sample_rate, channels : int
        Of the audio written.
    """

    def __init__(self, f: IO[bytes], fmt: AudioFormat, sample_rate: int, channels: int) -> None:
        self.format = fmt.output
        self.clipped = 0
        self._f = f
        self._sound: soundfile.SoundFile | None = None
        if self.format.container != "raw":
            import soundfile as sf

            try:  # a real file is written by libsndfile itself: errors come back as errors
                target: IO[bytes] | int = f.fileno()
            except (AttributeError, io.UnsupportedOperation):
                target = f
            with _write_errors():
                self._sound = sf.SoundFile(target, "w", sample_rate, channels,
                                           subtype=self.format.subtype,
                                           format=self.format.container, closefd=False)

    def write(self, samples: np.ndarray) -> None:
        """Append ``samples`` (``[n]`` or ``[n, channels]``); count what was clipped.

        Raises ``OSError`` when the data cannot be written (a full disk...).
        """
        data, clipped = _storage(samples, self.format)
        self.clipped += clipped
        if self._sound is None:
            self._f.write(data.tobytes())
        else:
            with _write_errors():
                self._sound.write(data)

    def close(self) -> None:
        """Finish the file (a container's header gets its length); the file stays open."""
        if self._sound is not None:
            sound, self._sound = self._sound, None
            with _write_errors():
                sound.close()

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def _write_errors() -> Iterator[None]:
    """libsndfile's errors while writing, as the ``OSError`` any other write raises."""
    import soundfile as sf

    try:
        yield
    except sf.LibsndfileError as exc:
        raise OSError(exc.error_string) from None


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: AudioFormat) -> tuple[bytes, int]:
    """Encode float samples in ``fmt.output``; return the bytes and how many were clipped.

    Float and lossy formats keep every value (a ×3 model may exceed 1.0); integer formats
    saturate at the range's ends rather than wrap.
    """
    view, clipped = encode_audio_view(samples, sample_rate, fmt)
    return bytes(view), clipped


def encode_audio_view(samples: np.ndarray, sample_rate: int,
                      fmt: AudioFormat) -> tuple[memoryview, int]:
    """As :func:`encode_audio`, but a byte view of the encoding, not a copy of it.

    For the service: copying a 10-minute answer into a new ``bytes`` holds the GIL for tens
    of milliseconds (the new memory faults in page by page), and while it does, the event
    loop, and every live stream on it, waits.
    """
    if fmt.container == "raw":
        data, clipped = _storage(samples, fmt)
        return np.ascontiguousarray(data).data.cast("B"), clipped
    buffer = io.BytesIO()
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with AudioWriter(buffer, fmt, sample_rate, channels) as writer:
        writer.write(samples)
    return buffer.getbuffer(), writer.clipped

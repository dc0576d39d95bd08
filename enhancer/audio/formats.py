"""Audio formats: rates, encodings, containers, the per-request :class:`Budget` and the
checks every sample array passes.

Knows containers, encodings, rates and channels; nothing of the model. Audio inside the
pipeline is float32, shaped ``[samples]`` (mono) or ``[samples, channels]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from numbers import Integral
from typing import NoReturn

import numpy as np

from enhancer.errors import InvalidAudio, TooLarge

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000

# Headerless encodings: numpy dtype and the full-scale value that maps to 1.0.
RAW_FORMATS: dict[str, tuple[str, float | None]] = {
    "f32le": ("<f4", None),
    "s16le": ("<i2", 32768.0),
}
# soundfile's names of the containers read; "OGG" holds Vorbis or Opus.
CONTAINERS = ("WAV", "FLAC", "MP3", "OGG")
# What each container is answered with over HTTP; headerless audio is application/octet-stream.
MEDIA_TYPES = {"WAV": "audio/wav", "FLAC": "audio/flac", "MP3": "audio/mpeg",
               "OGG": "audio/ogg", "raw": "application/octet-stream"}
# File names the CLI's folder mode picks up.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".raw", ".pcm", ".f32",
                            ".s16"})
SUPPORTED_FORMATS_TEXT = ("WAV (PCM 8/16/24/32-bit, float), FLAC (8/16/24-bit), MP3, "
                          "Ogg Vorbis, Ogg Opus, raw f32le, raw s16le")

# Full scale of the integer subtypes soundfile reads as float in [-1, 1).
INT_SUBTYPE_SCALE = {"PCM_S8": 2.0**7, "PCM_U8": 2.0**7, "PCM_16": 2.0**15,
                      "PCM_24": 2.0**23, "PCM_32": 2.0**31}
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
# Lossy codecs: decoded to float, written back from float (values above 1.0 are kept).
LOSSY_SUBTYPES = {"MP3": ("MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"),
                   "OGG": ("VORBIS", "OPUS")}
_DISPLAY_NAMES = {"OGG": "Ogg"}
# Magic bytes of containers that are recognised but not read, so they are not mistaken for
# headerless samples: (offset, magic, name).
OTHER_CONTAINERS = ((4, b"ftyp", "M4A/MP4"), (0, b"\x1a\x45\xdf\xa3", "WebM/Matroska"),
                     (0, b"ADIF", "AAC"), (0, b"FORM", "AIFF"), (0, b"caff", "CAF"),
                     (0, b".snd", "AU"), (0, b"#!AMR", "AMR"), (0, b"wvpk", "WavPack"),
                     (0, b"MAC ", "Monkey's Audio"))
# Frames asked of libsndfile per call when the length is not known in advance.
READ_BLOCK_FRAMES = 1 << 16
# Bytes of headerless samples converted at a time, so no second copy of a whole upload exists.
RAW_CHUNK_BYTES = 1 << 22
# Without a budget, memory is never reserved for more frames than this on a header's word.
UNTRUSTED_FRAMES = 1 << 22
# The largest sample magnitude taken (full scale is 1.0). Far above any real audio (float
# audio written at int32 scale, 2**31, passes), far below what breaks the shipped denoiser
# (its output turns NaN, and its stream state with it, from about 1e17).
MAX_SAMPLE_MAGNITUDE = 1e10


def display_name(container: str) -> str:
    return _DISPLAY_NAMES.get(container, container)


@dataclass(frozen=True)
class AudioFormat:
    """How audio was stored, so the result can be stored the same way.

    ``container`` is ``"raw"`` or soundfile's format name (``"WAV"``, ``"FLAC"``, ``"MP3"``,
    ``"OGG"``); ``subtype`` is the raw format name (``"f32le"``, ``"s16le"``) or soundfile's
    subtype (``"PCM_16"``, ``"FLOAT"``, ``"MPEG_LAYER_III"``, ``"VORBIS"``...).
    """

    container: str
    subtype: str

    @property
    def is_integer(self) -> bool:
        return self.subtype == "s16le" or self.subtype in INT_SUBTYPE_SCALE

    @property
    def output(self) -> AudioFormat:
        """The format a result is written in: this one, or the nearest libsndfile can write.

        MPEG layer I and II are written as layer III (MP3); where this libsndfile cannot
        encode MP3 at all, MP3 comes back as float WAV.
        """
        if self.container == "MP3":
            return AudioFormat("MP3", "MPEG_LAYER_III") if _can_write_mp3() else AudioFormat(
                "WAV", "FLOAT")
        return self

    @property
    def media_type(self) -> str:
        """The media type of a result written in this format (see :attr:`output`)."""
        return MEDIA_TYPES.get(self.output.container, MEDIA_TYPES["raw"])


@cache
def _can_write_mp3() -> bool:
    import soundfile as sf

    return "MPEG_LAYER_III" in sf.available_subtypes("MP3")


@dataclass(frozen=True)
class AudioInfo:
    """What a header says, read before any sample is decoded.

    ``frames`` is the length per channel, or None when the header does not give it (a FLAC
    written to a pipe); for MP3 it is the larger of the header's figure and the frames found.
    """

    format: AudioFormat
    sample_rate: int
    channels: int
    frames: int | None

    @property
    def seconds(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


@dataclass
class DecodedAudio:
    """Float32 samples (``[n]`` or ``[n, channels]``), their rate and their original format."""

    samples: np.ndarray
    sample_rate: int
    format: AudioFormat

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else self.samples.shape[1]


def decoded_samples(frames: int, channels: int, sample_rate: int,
                    model_rate: int | None = None) -> int:
    """Samples ``frames`` × ``channels`` become at the larger of their rate and the model's.

    What the pipeline holds per copy once the audio is resampled to the model's rate.
    """
    rate = max(sample_rate, model_rate or sample_rate)
    return -(-frames * rate // sample_rate) * channels


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.1f}".removesuffix(".0")


@dataclass(frozen=True)
class Budget:
    """Limits on one piece of audio, checked from its header before it is decoded.

    Each limit carries the name of the setting that sets it, so a refusal says what to
    change. ``None`` means no limit.

    Parameters
    ----------
    max_seconds : float, optional
        Longest audio, in seconds (``MAX_AUDIO_SECONDS``).
    max_channels : int, optional
        Most channels (``MAX_CHANNELS``).
    max_samples : int, optional
        Most decoded samples: frames × channels at the larger of the audio's rate and the
        model's, which is what one copy of it takes once resampled (``MAX_DECODED_SAMPLES``).
    """

    max_seconds: float | None = None
    max_channels: int | None = None
    max_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_seconds", "max_channels", "max_samples"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float))
                                          and not isinstance(value, bool) and value > 0):
                raise ValueError(f"Budget {name} must be a positive number or None, "
                                 f"got {value!r}")

    def check(self, info: AudioInfo, model_rate: int | None = None) -> None:
        """Raise ``TooLarge`` if ``info`` is over a limit; an unknown length passes here.

        Audio of unknown length is held to :meth:`frame_limit` while it is decoded.
        """
        if self.max_channels is not None and info.channels > self.max_channels:
            raise TooLarge(f"the audio has {info.channels} channels; the limit is "
                           f"MAX_CHANNELS={self.max_channels}")
        if info.frames is not None:
            self._check_length(info, info.frames, model_rate, more=False)

    def frame_limit(self, info: AudioInfo, model_rate: int | None = None) -> int | None:
        """The most frames per channel ``info``'s audio may hold; None when unlimited."""
        limits = []
        if self.max_seconds is not None:
            limits.append(math.floor(self.max_seconds * info.sample_rate))
        if self.max_samples is not None:
            rate = max(info.sample_rate, model_rate or info.sample_rate)
            per_channel = self.max_samples // info.channels
            limits.append(per_channel * info.sample_rate // rate)
        return min(limits) if limits else None

    def refuse_length(self, info: AudioInfo, frames_read: int,
                      model_rate: int | None = None) -> NoReturn:
        """Raise ``TooLarge`` for audio found, while decoding, to hold over ``frame_limit``."""
        self._check_length(info, frames_read, model_rate, more=True)
        raise AssertionError(f"{frames_read} frames are within the budget")  # pragma: no cover

    def _check_length(self, info: AudioInfo, frames: int, model_rate: int | None,
                      more: bool) -> None:
        over = "more than " if more else ""
        seconds = frames / info.sample_rate
        if self.max_seconds is not None and seconds > self.max_seconds:
            raise TooLarge(f"the audio is {over}{_seconds_text(seconds)} s long; the limit "
                           f"is MAX_AUDIO_SECONDS={self.max_seconds:g}")
        samples = decoded_samples(frames, info.channels, info.sample_rate, model_rate)
        if self.max_samples is not None and samples > self.max_samples:
            rate = max(info.sample_rate, model_rate or info.sample_rate)
            raise TooLarge(f"the audio decodes to {over}{samples} samples "
                           f"({_seconds_text(seconds)} s × {info.channels} channel(s) at "
                           f"{rate} Hz); the limit is MAX_DECODED_SAMPLES={self.max_samples}")


def check_sample_rate(value: object, name: str = "sample_rate") -> int:
    """Return ``value`` as an int if it is an integer rate in the supported range."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer number of Hz, got {type(value).__name__}")
    rate = int(value)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{name} must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, "
                         f"got {rate}")
    return rate


def check_samples(samples: object, name: str = "raw_data") -> np.ndarray:
    """Validate a 1-D or 2-D (channels-last) array of finite floats no larger in magnitude
    than ``MAX_SAMPLE_MAGNITUDE``; return it as an array."""
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(samples).__name__}")
    if samples.dtype.kind != "f":
        raise TypeError(f"{name} must hold floats, got dtype {samples.dtype}")
    if samples.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (mono) or 2-D [samples, channels], "
                         f"got shape {samples.shape}")
    # In slices of about a million samples, so no mask as large as the audio is ever held.
    rows = max(1, (1 << 20) // max(1, samples.shape[1] if samples.ndim == 2 else 1))
    slices = [samples[i:i + rows] for i in range(0, len(samples), rows)]
    # Each slice's extremes, which allocate nothing: a NaN anywhere makes them NaN, and NaN
    # fails the comparison too.
    if all(part.min() >= -MAX_SAMPLE_MAGNITUDE and part.max() <= MAX_SAMPLE_MAGNITUDE
           for part in slices if part.size):
        return samples
    bad = sum(part.size - int(np.count_nonzero(np.isfinite(part))) for part in slices)
    if bad:
        raise InvalidAudio(f"{name} holds {bad} NaN or infinite samples")
    loud = sum(int(np.count_nonzero(np.abs(part) > MAX_SAMPLE_MAGNITUDE)) for part in slices)
    raise InvalidAudio(f"{name} holds {loud} sample{'s' if loud != 1 else ''} of magnitude "
                       f"over MAX_SAMPLE_MAGNITUDE={MAX_SAMPLE_MAGNITUDE:.0e} (full scale "
                       f"is 1.0)")

"""Decode, encode and resample audio.

Knows containers, encodings, rates and channels; nothing of the model. Audio inside the
pipeline is float32, shaped ``[samples]`` (mono) or ``[samples, channels]``.

Containers are read by ``soundfile`` (libsndfile) in blocks through :class:`AudioReader`,
which checks the header before any sample is decoded (:func:`probe_audio`, :class:`Budget`)
and that a file holds as many samples as its header says; :func:`decode_audio` reads a whole
upload that way, the CLI streams files with it. :class:`AudioWriter` writes blocks back in the
format that came in.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from numbers import Integral
from typing import IO, TYPE_CHECKING, NoReturn

import numpy as np

from enhancer.errors import InvalidAudio, TooLarge, UnsupportedFormat

if TYPE_CHECKING:
    import soundfile

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
_INT_SUBTYPE_SCALE = {"PCM_S8": 2.0**7, "PCM_U8": 2.0**7, "PCM_16": 2.0**15,
                      "PCM_24": 2.0**23, "PCM_32": 2.0**31}
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
# Lossy codecs: decoded to float, written back from float (values above 1.0 are kept).
_LOSSY_SUBTYPES = {"MP3": ("MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"),
                   "OGG": ("VORBIS", "OPUS")}
_DISPLAY_NAMES = {"OGG": "Ogg"}
# Magic bytes of containers that are recognised but not read, so they are not mistaken for
# headerless samples: (offset, magic, name).
_OTHER_CONTAINERS = ((4, b"ftyp", "M4A/MP4"), (0, b"\x1a\x45\xdf\xa3", "WebM/Matroska"),
                     (0, b"ADIF", "AAC"), (0, b"FORM", "AIFF"), (0, b"caff", "CAF"),
                     (0, b".snd", "AU"), (0, b"#!AMR", "AMR"), (0, b"wvpk", "WavPack"),
                     (0, b"MAC ", "Monkey's Audio"))
# Frames asked of libsndfile per call when the length is not known in advance.
_READ_BLOCK_FRAMES = 1 << 16
# Bytes of headerless samples converted at a time, so no second copy of a whole upload exists.
_RAW_CHUNK_BYTES = 1 << 22
# Without a budget, memory is never reserved for more frames than this on a header's word.
_UNTRUSTED_FRAMES = 1 << 22


def _display(container: str) -> str:
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
        return self.subtype == "s16le" or self.subtype in _INT_SUBTYPE_SCALE

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
    """Validate a 1-D or 2-D (channels-last) array of finite floats; return it as an array."""
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
    if not all(np.isfinite(part).all() for part in slices):
        bad = sum(part.size - int(np.count_nonzero(np.isfinite(part))) for part in slices)
        raise InvalidAudio(f"{name} holds {bad} NaN or infinite samples")
    return samples


def convert_to_required_format(raw_data: np.ndarray, desired_sample_rate: int,
                               original_sample_rate: int) -> np.ndarray:
    """Resample audio from ``original_sample_rate`` to ``desired_sample_rate``.

    Uses libsoxr (``soxr.resample``, its default high quality), in float32; the output has
    exactly ``ceil(n * desired / original)`` samples (soxr's own count, zero-padded by at
    most one sample at the end). A stream resampled chunk by chunk with
    ``soxr.ResampleStream`` and padded the same way at its end gives the very same samples,
    which is what keeps streamed and whole-file output identical (see
    :func:`resampled_length`).

    Parameters
    ----------
    raw_data : ndarray
        Float samples, ``[n]`` or ``[n, channels]``.
    desired_sample_rate, original_sample_rate : int
        Rates in Hz, ``MIN_SAMPLE_RATE`` to ``MAX_SAMPLE_RATE``.

    Returns
    -------
    ndarray
        ``raw_data`` itself when the rates match, else a new float32 array.
    """
    raw_data = check_samples(raw_data)
    desired = check_sample_rate(desired_sample_rate, "desired_sample_rate")
    original = check_sample_rate(original_sample_rate, "original_sample_rate")
    if desired == original:
        return raw_data
    length = resampled_length(raw_data.shape[0], desired, original)
    if raw_data.shape[0] == 0:
        return np.zeros((0, *raw_data.shape[1:]), dtype=np.float32)
    import soxr

    resampled = soxr.resample(np.ascontiguousarray(raw_data, dtype=np.float32), original,
                              desired)
    return fit_length(resampled, length)


def resampled_length(num_samples: int, desired_sample_rate: int,
                     original_sample_rate: int) -> int:
    """How many samples :func:`convert_to_required_format` returns for ``num_samples``."""
    return -(-num_samples * desired_sample_rate // original_sample_rate)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``samples`` along axis 0 to exactly ``length``."""
    if samples.shape[0] >= length:
        return samples[:length]
    pad = [(0, length - samples.shape[0])] + [(0, 0)] * (samples.ndim - 1)
    return np.pad(samples, pad)


# --------------------------------------------------------------------------- recognising formats


def _read_at(f: IO[bytes], offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _id3_end(f: IO[bytes]) -> int:
    """Where the audio starts after any ID3v2 tags at the front (0 when there are none)."""
    offset = 0
    while True:
        head = _read_at(f, offset, 10)
        if len(head) < 10 or head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
            return offset
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        offset += 10 + size + (10 if head[5] & 0x10 else 0)  # the flag says a footer follows


# kbit/s by bitrate index, for (MPEG-1?, layer).
_MPEG_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Sample rates by version bits (MPEG-2.5, reserved, MPEG-2, MPEG-1) and rate index.
_MPEG_RATES = {0: (11025, 12000, 8000), 2: (22050, 24000, 16000), 3: (44100, 48000, 32000)}


def _mpeg_frame(head: bytes, at: int = 0) -> tuple[int, int] | None:
    """Length in bytes and samples per channel of the MPEG audio frame at ``head[at:]``.

    None unless it is a valid frame header (free-format bitrates are not followed).
    """
    if len(head) < at + 4 or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    version, layer = (head[at + 1] >> 3) & 3, 4 - ((head[at + 1] >> 1) & 3)
    bitrate_index, rate_index = head[at + 2] >> 4, (head[at + 2] >> 2) & 3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1, padding = version == 3, (head[at + 2] >> 1) & 1
    bitrate = _MPEG_BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _MPEG_RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4, 384
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + padding, 576
    return 144 * bitrate // rate + padding, 1152


def _adts_frame_length(head: bytes) -> int | None:
    """Length of the ADTS (raw AAC) frame at the start of ``head``, or None."""
    if len(head) < 7 or head[0] != 0xFF or head[1] & 0xF6 != 0xF0 or (head[2] >> 2) & 15 > 12:
        return None
    length = ((head[3] & 3) << 11) | (head[4] << 3) | (head[5] >> 5)
    return length if length >= 7 else None


def _frames_follow(f: IO[bytes], offset: int, size: int,
                   frame_length: Callable[[bytes], int | None]) -> bool:
    """True when a frame starts at ``offset`` and another right after it (or the data ends there).

    Two in a row tell a stream from headerless samples that happen to start alike.
    """
    length = frame_length(_read_at(f, offset, 8))
    if length is None:
        return False
    return offset + length == size or frame_length(_read_at(f, offset + length, 8)) is not None


def _unsupported(name: str) -> UnsupportedFormat:
    return UnsupportedFormat(f"{name} audio is not supported; supported formats: "
                             f"{SUPPORTED_FORMATS_TEXT}")


def _sniff(f: IO[bytes], size: int) -> tuple[str | None, int]:
    """The container of ``f`` and where it starts (after ID3 tags); None for headerless.

    Raises ``UnsupportedFormat`` naming a container that is recognised but not read.
    """
    head = _read_at(f, 0, 12)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return "WAV", 0
    if head[:4] == b"fLaC":
        return "FLAC", 0
    if head[:4] == b"OggS":
        return "OGG", 0
    for offset, magic, name in _OTHER_CONTAINERS:
        if head[offset:offset + len(magic)] == magic:
            raise _unsupported(name)
    start = _id3_end(f)
    after = _read_at(f, start, 4)
    if start and after == b"fLaC":
        return "FLAC", start
    if _frames_follow(f, start, size, _adts_frame_length):
        raise _unsupported("AAC (ADTS)")
    if start or _frames_follow(f, start, size, lambda h: (_mpeg_frame(h) or (None,))[0]):
        return "MP3", start
    return None, 0


def _check_wav_header(f: IO[bytes], size: int) -> None:
    """Refuse a WAV header libsndfile would misread, or a data chunk cut short.

    libsndfile reads a PCM header declaring, say, 7 bits per sample as 8-bit audio, and reads
    quietly what is there of a truncated data chunk. Data sizes of 0 and 0xFFFFFFFF mean
    "unknown" (streamed or RF64 files) and are let through.
    """
    head = _read_at(f, 0, 12)
    endian = ">" if head[:4] == b"RIFX" else "<"
    position = 12
    while position + 8 <= size:
        chunk = _read_at(f, position, 8)
        chunk_id, chunk_size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
        if chunk_id == b"fmt " and chunk_size >= 16:
            tag, channels, _, _, block_align, bits = struct.unpack(
                endian + "HHIIHH", _read_at(f, position + 8, 16))
            # PCM, IEEE float, extensible: the formats whose samples are whole bytes.
            if tag in (1, 3, 0xFFFE) and (bits == 0 or bits % 8
                                          or block_align != channels * bits // 8):
                raise InvalidAudio(f"the WAV header is inconsistent: {bits} bits per sample "
                                   f"and a block of {block_align} bytes for {channels} "
                                   f"channel(s); samples must be whole bytes (8, 16, 24 or "
                                   f"32 bits) and a block one sample per channel")
        if chunk_id == b"data":
            available = size - position - 8
            if head[:4] != b"RF64" and chunk_size not in (0, 0xFFFFFFFF) and (
                    chunk_size > available):
                raise InvalidAudio(f"the WAV data is truncated: its header announces "
                                   f"{chunk_size} bytes of samples, {available} are present")
            return
        position += 8 + chunk_size + (chunk_size & 1)


# FLAC: STREAMINFO is the first metadata block; its 8 bytes at offset 10 pack the sample rate
# (20 bits), channels - 1 (3), bits - 1 (5) and the total samples per channel (36, 0 unknown).
_STREAMINFO_PACKED = 4 + 4 + 10  # "fLaC", the block header, sizes
_TOTAL_SAMPLES_MASK = (1 << 36) - 1


def _flac_declared_frames(f: IO[bytes], start: int) -> tuple[int | None, bytes | None]:
    """The total samples STREAMINFO declares (None: unknown), and the bytes that hide it."""
    head = _read_at(f, start, _STREAMINFO_PACKED + 8)
    if len(head) < _STREAMINFO_PACKED + 8 or head[4] & 0x7F != 0:
        return None, None  # no STREAMINFO first: let libsndfile say what is wrong
    packed = int.from_bytes(head[_STREAMINFO_PACKED:], "big")
    total = packed & _TOTAL_SAMPLES_MASK
    hidden = (packed & ~_TOTAL_SAMPLES_MASK).to_bytes(8, "big")
    return total or None, hidden


class _Patched(io.RawIOBase):
    """A seekable binary file with a few bytes replaced, without copying the rest.

    libsndfile stops at the length a FLAC header declares; with the length hidden (0, "not
    known") it decodes what the stream really holds, so a file that holds more than it says
    is noticed instead of cut short.
    """

    def __init__(self, f: IO[bytes], offset: int, replacement: bytes) -> None:
        super().__init__()
        self._f, self._offset, self._replacement = f, offset, replacement

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buffer) -> int:
        position = self._f.tell()
        view = memoryview(buffer).cast("B")
        count = self._f.readinto(view)  # type: ignore[attr-defined]
        low = max(position, self._offset)
        high = min(position + count, self._offset + len(self._replacement))
        if low < high:
            view[low - position:high - position] = self._replacement[
                low - self._offset:high - self._offset]
        return count


def _mpeg_samples(f: IO[bytes], start: int) -> int:
    """Samples per channel in the MPEG frames from ``start`` up to the first non-frame byte.

    An upper bound of what a decoder gives (it also counts the Xing/Info frame, the encoder's
    delay and padding), found without decoding anything.
    """
    samples, position, base, chunk = 0, start, start, b""
    while True:
        at = position - base
        if at + 4 > len(chunk):
            base, chunk, at = position, _read_at(f, position, 1 << 20), 0
        frame = _mpeg_frame(chunk, at)
        if frame is None:
            return samples
        samples += frame[1]
        position += frame[0]


# Samples an MP3 decoder may leave out of what its frames hold: the Xing/Info frame, the
# encoder's delay (576 + 529) and padding, with room to spare.
def _mpeg_slack(samples_per_frame: int) -> int:
    return 4 * samples_per_frame + 2304


# --------------------------------------------------------------------------- reading


class AudioReader:
    """Float32 blocks of audio from a seekable binary file, its header checked first.

    Opening reads only the header: :attr:`info` says the format, rate, channels and length,
    so a caller can refuse the audio (:class:`Budget`) before decoding any of it. Reading
    checks as it goes that the file holds exactly what its header declares: more is refused
    as soon as it shows, fewer at the end. Use :func:`open_audio` to make one.
    """

    def __init__(self, f: IO[bytes], raw_format: str = "f32le",
                 sample_rate: int | None = None) -> None:
        f.seek(0, io.SEEK_END)
        size = f.tell()
        if size == 0:
            raise InvalidAudio("the audio is empty")
        self._f = f
        self.frames_read = 0
        self._done = False
        self._declared: int | None = None  # a length the file must hold exactly
        self._at_least: int | None = None  # MP3: what its frames hold, less a decoder's slack
        self._sound: soundfile.SoundFile | None = None
        container, start = _sniff(f, size)
        if container is None:
            self.info = self._open_raw(size, raw_format, sample_rate)
        else:
            self.info = self._open_container(container, start, size)
        self.name = _display(self.info.format.container) if container else "audio"

    def _open_raw(self, size: int, raw_format: str, sample_rate: int | None) -> AudioInfo:
        if raw_format not in RAW_FORMATS:
            raise UnsupportedFormat(f"unknown raw format {raw_format!r}; supported formats: "
                                    f"{SUPPORTED_FORMATS_TEXT}")
        dtype, scale = RAW_FORMATS[raw_format]
        width = np.dtype(dtype).itemsize
        if size % width:
            raise InvalidAudio(f"{size} bytes is not a whole number of {raw_format} samples "
                               f"({width} bytes each)")
        if sample_rate is None:
            raise InvalidAudio(f"headerless {raw_format} audio needs a sample rate")
        try:
            rate = check_sample_rate(sample_rate)
        except (TypeError, ValueError) as exc:
            raise InvalidAudio(str(exc)) from None
        self._raw = (np.dtype(dtype), scale)
        self._declared = size // width
        self._f.seek(0)
        return AudioInfo(AudioFormat("raw", raw_format), rate, 1, size // width)

    def _open_container(self, container: str, start: int, size: int) -> AudioInfo:
        import soundfile as sf

        source: IO[bytes] | _Patched = self._f
        name = _display(container)
        in_frames = spf = 0
        if container == "WAV":
            _check_wav_header(self._f, size)
        elif container == "MP3":
            # libsndfile takes an MP3's length from its Xing/Info header, or else guesses it,
            # and never reads past that: the frames themselves say what it holds. (Counted
            # now: libsndfile expects the file where it left it.)
            in_frames = _mpeg_samples(self._f, start)
            spf = (_mpeg_frame(_read_at(self._f, start, 4)) or (0, 1152))[1]
        elif container == "FLAC":
            self._declared, hidden = _flac_declared_frames(self._f, start)
            if hidden is not None:
                source = _Patched(self._f, start + _STREAMINFO_PACKED, hidden)
        self._f.seek(0)
        try:
            sound = sf.SoundFile(source)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            reason = getattr(exc, "error_string", None) or str(exc)
            raise InvalidAudio(f"cannot read the {name} data: {reason}") from None
        self._sound = sound
        subtype, rate, frames = sound.subtype, sound.samplerate, sound.frames
        if container in _LOSSY_SUBTYPES:
            accepted = subtype in _LOSSY_SUBTYPES[container]
        else:
            accepted = subtype in _INT_SUBTYPE_SCALE or (container == "WAV"
                                                          and subtype in _FLOAT_SUBTYPES)
        if not accepted:
            self.close()
            raise UnsupportedFormat(f"{name} subtype {subtype} is not supported; supported "
                                    f"formats: {SUPPORTED_FORMATS_TEXT}")
        try:
            check_sample_rate(rate, "sample rate in the header")
        except ValueError as exc:
            self.close()
            raise InvalidAudio(str(exc)) from None
        if container == "WAV":
            self._declared = frames
        elif container == "MP3":
            self._at_least = in_frames - _mpeg_slack(spf)
            self._declared = frames
            frames = max(frames, in_frames)
        elif container == "OGG":
            self._declared = frames
        return AudioInfo(AudioFormat(container, subtype), rate, sound.channels,
                         self._declared if container == "FLAC" else frames)

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the decoder; the file given stays open."""
        if self._sound is not None:
            self._sound.close()
            self._sound = None

    def readinto(self, out: np.ndarray) -> int:
        """Decode up to ``len(out)`` frames into ``out``; return how many, 0 at the end.

        ``out`` is C-contiguous float32 ``[n, channels]``. Values are as soundfile reads them
        as float32 (integers scaled to [-1, 1)); NaN and Inf are not checked here.

        Raises
        ------
        InvalidAudio
            The file holds more or fewer samples than its header declares, none at all, or
            cannot be decoded.
        """
        if self._done or len(out) == 0:
            return 0
        count = self._read_raw(out) if self._sound is None else self._read_sound(out)
        self.frames_read += count
        if self._declared is not None and self.frames_read > self._declared:
            raise InvalidAudio(f"the {self.name} data holds more samples than its header "
                               f"announces ({self._declared})")
        if count == 0:
            self._done = True
            self._check_complete()
        return count

    def read(self, frames: int) -> np.ndarray:
        """Up to ``frames`` frames as float32 ``[n, channels]``; an empty array at the end."""
        out = np.empty((frames, self.info.channels), np.float32)
        count = 0
        while count < frames:
            got = self.readinto(out[count:])
            if got == 0:
                break
            count += got
        return out[:count]

    def read_all(self, limit: int | None = None,
                 over_limit: Callable[[int], NoReturn] | None = None) -> np.ndarray:
        """Every remaining frame, ``[n, channels]`` float32, reading no more than ``limit + 1``.

        Memory grows with what is decoded, not with what the header claims: it is reserved
        for the declared length only up to ``limit`` (or a few million frames without one).
        ``over_limit(frames)`` is called (and must raise) when the audio passes ``limit``.
        """
        expected = self.info.frames
        ceiling = None if limit is None else limit + 1
        if expected is None:
            capacity = _READ_BLOCK_FRAMES
        elif ceiling is None:
            capacity = min(expected + 1, _UNTRUSTED_FRAMES)
        else:
            capacity = expected + 1
        if ceiling is not None:
            capacity = min(capacity, ceiling)
        buffer = np.empty((max(capacity, 1), self.info.channels), np.float32)
        count = 0
        while True:
            if count == len(buffer):
                if ceiling is not None and count >= ceiling:
                    break
                grown = max(len(buffer) + _READ_BLOCK_FRAMES, len(buffer) * 3 // 2)
                # In place where the allocator can (realloc): no second copy of the audio.
                buffer.resize((grown if ceiling is None else min(grown, ceiling),
                               self.info.channels), refcheck=False)
            got = self.readinto(buffer[count:])
            if got == 0:
                break
            count += got
            if limit is not None and count > limit:
                if over_limit is not None:
                    over_limit(count)
                raise TooLarge(f"the audio holds more than {limit} samples per channel")
        buffer.resize((count, self.info.channels), refcheck=False)
        return buffer

    def _read_sound(self, out: np.ndarray) -> int:
        # soundfile's own read() seeks after every block, which fails on a stream of unknown
        # length (a FLAC written to a pipe); libsndfile's read function itself does not.
        from soundfile import _ffi, _snd

        assert out.flags.c_contiguous and out.dtype == np.float32
        assert self._sound is not None
        handle = self._sound._file
        count = _snd.sf_readf_float(handle, _ffi.cast("float *", out.ctypes.data), len(out))
        error = _snd.sf_error(handle)
        if error:
            reason = _ffi.string(_snd.sf_error_number(error)).decode(errors="replace")
            raise InvalidAudio(f"cannot decode the {self.name} data: {reason}")
        return int(count)

    def _read_raw(self, out: np.ndarray) -> int:
        dtype, scale = self._raw
        flat = out.reshape(-1)
        count = 0
        while count < len(flat):
            chunk = self._f.read(min(len(flat) - count, _RAW_CHUNK_BYTES // dtype.itemsize)
                                 * dtype.itemsize)
            if not chunk:
                break
            samples = np.frombuffer(chunk, dtype=dtype)
            if scale is None:
                flat[count:count + len(samples)] = samples
            else:
                np.divide(samples, np.float32(scale), out=flat[count:count + len(samples)])
            count += len(samples)
        return count

    def _check_complete(self) -> None:
        name, count = self.name, self.frames_read
        if count == 0:
            raise InvalidAudio("the audio is empty" if self._sound is None
                               else f"the {name} data holds no samples")
        if self._declared is not None and count < self._declared:
            raise InvalidAudio(f"the {name} data is truncated: its header announces "
                               f"{self._declared} samples, {count} could be read")
        if self._at_least is not None and count < self._at_least:
            raise InvalidAudio(f"the MP3 data holds about {self.info.frames} samples per "
                               f"channel, but libsndfile decodes only {count}: it has no "
                               f"Xing/Info header giving its length; convert it to WAV or "
                               f"FLAC, or re-encode it")


def open_audio(f: IO[bytes], raw_format: str = "f32le",
               sample_rate: int | None = None) -> AudioReader:
    """Open ``f`` (a seekable binary file) for reading in blocks; only the header is read.

    WAV, FLAC, MP3 and Ogg (Vorbis, Opus) are recognised by their header, which gives the
    rate and encoding; anything else is headerless ``raw_format`` mono at ``sample_rate``.

    Raises
    ------
    UnsupportedFormat
        ``raw_format`` is unknown, or the data is in a container or encoding not read.
    InvalidAudio
        Empty data, a corrupt, inconsistent or truncated header, a byte count that does not
        fit the encoding, or a missing or out-of-range rate.
    """
    return AudioReader(f, raw_format, sample_rate)


def probe_audio(data: bytes, raw_format: str = "f32le",
                sample_rate: int | None = None) -> AudioInfo:
    """What the header of ``data`` says, without decoding any sample (see :func:`open_audio`)."""
    with open_audio(io.BytesIO(data), raw_format, sample_rate) as reader:
        return reader.info


def decode_audio(data: bytes, raw_format: str = "f32le", sample_rate: int | None = None,
                 budget: Budget | None = None, model_rate: int | None = None) -> DecodedAudio:
    """Decode WAV, FLAC, MP3, Ogg Vorbis/Opus or headerless samples into float32.

    Containers are recognised by their header, which gives the rate and encoding; anything
    else is read as headerless ``raw_format`` samples at ``sample_rate``. With a ``budget``,
    the header is checked against it before anything is decoded, and audio of unknown length
    is decoded only up to it; memory follows what is decoded, float32 throughout.

    Parameters
    ----------
    data : bytes
        The file's bytes.
    raw_format : str
        Encoding of headerless data, a key of ``RAW_FORMATS``.
    sample_rate : int, optional
        Rate of headerless data, Hz.
    budget : Budget, optional
        Limits to refuse the audio by; none by default.
    model_rate : int, optional
        The model's rate, which the budget's decoded samples are counted at when higher.

    Raises
    ------
    TooLarge
        The audio is over the budget (the message names the limit and its setting).
    UnsupportedFormat
        ``raw_format`` is unknown, or the data is in a container or encoding not read.
    InvalidAudio
        Empty data, a corrupt, inconsistent or truncated header, more or fewer samples than
        the header declares, a byte count that does not fit the encoding, NaN/Inf samples, or
        a missing or out-of-range rate.
    """
    if not data:
        raise InvalidAudio("the audio is empty")
    with open_audio(io.BytesIO(data), raw_format, sample_rate) as reader:
        info = reader.info
        limit = None
        if budget is not None:
            budget.check(info, model_rate)
            limit = budget.frame_limit(info, model_rate)

        def over_limit(frames: int) -> NoReturn:
            assert budget is not None
            budget.refuse_length(info, frames, model_rate)

        samples = reader.read_all(limit, over_limit)
    if samples.shape[1] == 1:
        samples = samples.reshape(-1)
    check_samples(samples, "the audio")
    return DecodedAudio(samples, info.sample_rate, info.format)


# --------------------------------------------------------------------------- writing


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
    if fmt.subtype not in _INT_SUBTYPE_SCALE:
        return samples.astype(np.float32, copy=False), 0
    # soundfile maps the full int16/int32 range onto the file's bit depth.
    if fmt.subtype == "PCM_16":
        return quantize(samples, _INT_SUBTYPE_SCALE["PCM_16"], np.int16)
    shift = 32 - int(math.log2(_INT_SUBTYPE_SCALE[fmt.subtype])) - 1
    return quantize(samples, _INT_SUBTYPE_SCALE[fmt.subtype], np.int32, shift)


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
    if fmt.container == "raw":
        data, clipped = _storage(samples, fmt)
        return data.tobytes(), clipped
    buffer = io.BytesIO()
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with AudioWriter(buffer, fmt, sample_rate, channels) as writer:
        writer.write(samples)
    return buffer.getvalue(), writer.clipped

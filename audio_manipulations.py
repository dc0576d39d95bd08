"""Decode, encode and resample audio.

Knows containers, encodings, rates and channels; nothing of the model. Audio inside the
pipeline is float32, shaped ``[samples]`` (mono) or ``[samples, channels]``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from enhancer.errors import InvalidAudio, UnsupportedFormat

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000

# Headerless encodings: numpy dtype and the full-scale value that maps to 1.0.
RAW_FORMATS: dict[str, tuple[str, float | None]] = {
    "f32le": ("<f4", None),
    "s16le": ("<i2", 32768.0),
}
CONTAINERS = ("WAV", "FLAC")
# What each container is answered with over HTTP; headerless audio is application/octet-stream.
MEDIA_TYPES = {"WAV": "audio/wav", "FLAC": "audio/flac", "raw": "application/octet-stream"}
# File names the CLI's folder mode picks up.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".raw", ".pcm", ".f32", ".s16"})
SUPPORTED_FORMATS_TEXT = "WAV (PCM 16/24/32-bit, float), FLAC (16/24-bit), raw f32le, raw s16le"

# Full scale of the integer subtypes soundfile reads as float in [-1, 1).
_INT_SUBTYPE_SCALE = {"PCM_S8": 2.0**7, "PCM_U8": 2.0**7, "PCM_16": 2.0**15,
                      "PCM_24": 2.0**23, "PCM_32": 2.0**31}
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
# Magic bytes of containers that are recognised but not supported, so they are not
# mistaken for headerless samples.
_OTHER_CONTAINERS = {b"OggS": "Ogg", b"ID3": "MP3", b"\xff\xfb": "MP3", b"\xff\xf3": "MP3",
                     b"FORM": "AIFF", b"caff": "CAF", b".snd": "AU"}


@dataclass(frozen=True)
class AudioFormat:
    """How audio was stored, so the result can be stored the same way.

    ``container`` is ``"raw"``, ``"WAV"`` or ``"FLAC"``; ``subtype`` is the raw format name
    (``"f32le"``, ``"s16le"``) or soundfile's subtype (``"PCM_16"``, ``"FLOAT"``...).
    """

    container: str
    subtype: str

    @property
    def is_integer(self) -> bool:
        return self.subtype == "s16le" or self.subtype in _INT_SUBTYPE_SCALE

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(self.container, MEDIA_TYPES["raw"])


@dataclass
class DecodedAudio:
    """Float32 samples (``[n]`` or ``[n, channels]``), their rate and their original format."""

    samples: np.ndarray
    sample_rate: int
    format: AudioFormat

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else self.samples.shape[1]


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
    if not np.isfinite(samples).all():
        bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
        raise InvalidAudio(f"{name} holds {bad} NaN or infinite samples")
    return samples


def convert_to_required_format(raw_data: np.ndarray, desired_sample_rate: int,
                               original_sample_rate: int) -> np.ndarray:
    """Resample audio from ``original_sample_rate`` to ``desired_sample_rate``.

    Uses polyphase filtering (``scipy.signal.resample_poly``) with the reduced rational
    factor, so any pair of integer rates is fast and the output has exactly
    ``ceil(n * desired / original)`` samples.

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
    from scipy.signal import resample_poly

    divisor = math.gcd(desired, original)
    up, down = desired // divisor, original // divisor
    if raw_data.shape[0] == 0:
        return np.zeros((0, *raw_data.shape[1:]), dtype=np.float32)
    return resample_poly(raw_data, up, down, axis=0).astype(np.float32, copy=False)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``samples`` along axis 0 to exactly ``length``."""
    if samples.shape[0] >= length:
        return samples[:length]
    pad = [(0, length - samples.shape[0])] + [(0, 0)] * (samples.ndim - 1)
    return np.pad(samples, pad)


def _sniff_container(data: bytes) -> str | None:
    if data[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return "WAV"
    if data[:4] == b"fLaC":
        return "FLAC"
    for magic, name in _OTHER_CONTAINERS.items():
        if data.startswith(magic):
            raise UnsupportedFormat(f"{name} audio is not supported; supported formats: "
                                    f"{SUPPORTED_FORMATS_TEXT}")
    return None


def _check_wav_complete(data: bytes) -> None:
    """Refuse a WAV whose data chunk is shorter than its header says.

    libsndfile quietly reads what is there; a cut-off upload must not pass as shorter audio.
    Sizes of 0 and 0xFFFFFFFF mean "unknown" (streamed or RF64 files) and are let through.
    """
    if data[:4] != b"RIFF":
        return
    position = 12
    while position + 8 <= len(data):
        chunk_id = data[position:position + 4]
        size = int.from_bytes(data[position + 4:position + 8], "little")
        if chunk_id == b"data":
            available = len(data) - position - 8
            if size not in (0, 0xFFFFFFFF) and size > available:
                raise InvalidAudio(f"the WAV data is truncated: its header announces {size} "
                                   f"bytes of samples, {available} are present")
            return
        position += 8 + size + (size & 1)


def decode_audio(data: bytes, raw_format: str = "f32le",
                 sample_rate: int | None = None) -> DecodedAudio:
    """Decode WAV, FLAC or headerless samples into float32.

    WAV and FLAC are recognised by their header, which gives the rate and encoding.
    Anything else is read as headerless ``raw_format`` samples at ``sample_rate``.

    Raises
    ------
    UnsupportedFormat
        ``raw_format`` is unknown, or the data is in a container that is not supported.
    InvalidAudio
        Empty data, a corrupt or truncated header, a byte count that does not fit the
        encoding, NaN/Inf samples, or a missing or out-of-range rate.
    """
    if not data:
        raise InvalidAudio("the audio is empty")
    container = _sniff_container(data)
    if container is None:
        return _decode_raw(data, raw_format, sample_rate)

    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            subtype, rate, frames = f.subtype, f.samplerate, f.frames
            samples = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise InvalidAudio(f"cannot read the {container} data: {exc}") from None
    if subtype not in _INT_SUBTYPE_SCALE and subtype not in _FLOAT_SUBTYPES:
        raise UnsupportedFormat(f"{container} subtype {subtype} is not supported; supported "
                                f"formats: {SUPPORTED_FORMATS_TEXT}")
    if samples.shape[0] == 0:
        raise InvalidAudio(f"the {container} data holds no samples")
    if samples.shape[0] < frames:
        raise InvalidAudio(f"the {container} data is truncated: its header announces {frames} "
                           f"samples, {samples.shape[0]} could be read")
    if container == "WAV":
        _check_wav_complete(data)
    try:
        check_sample_rate(rate, "sample rate in the header")
    except ValueError as exc:
        raise InvalidAudio(str(exc)) from None
    if samples.shape[1] == 1:
        samples = samples[:, 0]
    check_samples(samples, "the audio")
    return DecodedAudio(samples, rate, AudioFormat(container, subtype))


def _decode_raw(data: bytes, raw_format: str, sample_rate: int | None) -> DecodedAudio:
    if raw_format not in RAW_FORMATS:
        raise UnsupportedFormat(f"unknown raw format {raw_format!r}; supported formats: "
                                f"{SUPPORTED_FORMATS_TEXT}")
    dtype, scale = RAW_FORMATS[raw_format]
    width = np.dtype(dtype).itemsize
    if len(data) % width:
        raise InvalidAudio(f"{len(data)} bytes is not a whole number of {raw_format} samples "
                           f"({width} bytes each)")
    if sample_rate is None:
        raise InvalidAudio(f"headerless {raw_format} audio needs a sample rate")
    try:
        rate = check_sample_rate(sample_rate)
    except (TypeError, ValueError) as exc:
        raise InvalidAudio(str(exc)) from None
    samples = np.frombuffer(data, dtype=dtype)
    if scale is None:
        samples = samples.astype(np.float32)
    else:
        samples = (samples / np.float32(scale)).astype(np.float32)
    check_samples(samples, "the audio")
    return DecodedAudio(samples, rate, AudioFormat("raw", raw_format))


def quantize(samples: np.ndarray, full_scale: float) -> tuple[np.ndarray, int]:
    """Round float samples to integers at ``full_scale``, saturating.

    Returns the integers and how many samples were clipped.
    """
    scaled = np.rint(samples.astype(np.float64) * full_scale)
    low, high = -full_scale, full_scale - 1
    clipped = int(np.count_nonzero((scaled < low) | (scaled > high)))
    return np.clip(scaled, low, high).astype(np.int64), clipped


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: AudioFormat) -> tuple[bytes, int]:
    """Encode float samples in ``fmt``; return the bytes and how many samples were clipped.

    Float formats keep every value (a ×3 model may exceed 1.0); integer formats saturate at
    the range's ends rather than wrap.
    """
    if fmt.container == "raw":
        dtype, scale = RAW_FORMATS[fmt.subtype]
        if scale is None:
            return samples.astype(dtype, copy=False).tobytes(), 0
        ints, clipped = quantize(samples, scale)
        return ints.astype(dtype).tobytes(), clipped

    import soundfile as sf

    clipped = 0
    if fmt.subtype in _INT_SUBTYPE_SCALE:
        ints, clipped = quantize(samples, _INT_SUBTYPE_SCALE[fmt.subtype])
        # soundfile maps the full int16/int32 range onto the file's bit depth.
        if fmt.subtype == "PCM_16":
            data = ints.astype(np.int16)
        else:
            data = (ints << (32 - int(math.log2(_INT_SUBTYPE_SCALE[fmt.subtype])) - 1)
                    ).astype(np.int32)
    else:
        data = samples.astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, data, sample_rate, format=fmt.container, subtype=fmt.subtype)
    return buffer.getvalue(), clipped

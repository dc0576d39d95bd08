"""Decode, encode and resample audio: the product's entry point to :mod:`enhancer.audio`.

``convert_to_required_format(raw_data, desired_sample_rate, original_sample_rate)`` resamples
with libsoxr; the other names are the audio IO the library uses, re-exported unchanged.
"""

from enhancer.audio.containers import MemoryFile
from enhancer.audio.decode import AudioReader, decode_audio, open_audio, probe_audio
from enhancer.audio.encode import QUANTIZE_BLOCK, AudioWriter, encode_audio, quantize
from enhancer.audio.formats import (
    AUDIO_SUFFIXES,
    CONTAINERS,
    MAX_SAMPLE_RATE,
    MEDIA_TYPES,
    MIN_SAMPLE_RATE,
    RAW_FORMATS,
    SUPPORTED_FORMATS_TEXT,
    AudioFormat,
    AudioInfo,
    Budget,
    DecodedAudio,
    check_sample_rate,
    check_samples,
)
from enhancer.audio.resample import convert_to_required_format, fit_length, resampled_length

__all__ = [
    "AUDIO_SUFFIXES", "CONTAINERS", "MAX_SAMPLE_RATE", "MEDIA_TYPES", "MIN_SAMPLE_RATE",
    "QUANTIZE_BLOCK", "RAW_FORMATS", "SUPPORTED_FORMATS_TEXT", "AudioFormat", "AudioInfo",
    "AudioReader", "AudioWriter", "Budget", "DecodedAudio", "MemoryFile", "check_sample_rate",
    "check_samples", "convert_to_required_format", "decode_audio", "encode_audio",
    "fit_length", "open_audio", "probe_audio", "quantize", "resampled_length",
]

"""Reading audio: recognise the container, check the header, decode in blocks.

:class:`AudioReader` reads a seekable file (``soundfile`` for containers, numpy for headerless
samples) and checks the header before any sample is decoded (:func:`probe_audio`,
:class:`~audio_manipulations.Budget`) and that the file holds as many samples as its header
says; :func:`decode_audio` reads a whole upload that way, the CLI streams files with it.
The public names are also in :mod:`audio_manipulations`, which owns the formats themselves.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, NoReturn, cast

import numpy as np

from enhancer.audio.containers import (
    STREAMINFO_PACKED,
    MemoryFile,
    PatchedFile,
    check_structure,
    flac_declared_frames,
    mpeg_frame,
    mpeg_samples,
    mpeg_slack,
    read_at,
    sniff,
)
from enhancer.audio.formats import (
    FLOAT_SUBTYPES,
    INT_SUBTYPE_SCALE,
    LOSSY_SUBTYPES,
    RAW_CHUNK_BYTES,
    RAW_FORMATS,
    READ_BLOCK_FRAMES,
    SUPPORTED_FORMATS_TEXT,
    UNTRUSTED_FRAMES,
    AudioFormat,
    AudioInfo,
    Budget,
    DecodedAudio,
    check_sample_rate,
    check_samples,
    display_name,
)
from enhancer.errors import InvalidAudio, TooLarge, UnsupportedFormat

if TYPE_CHECKING:
    import soundfile

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
        container, start = sniff(f, size)
        if container is None:
            self.info = self._open_raw(size, raw_format, sample_rate)
        else:
            self.info = self._open_container(container, start, size)
        self.name = display_name(self.info.format.container) if container else "audio"

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

        source: IO[bytes] | PatchedFile = self._f
        name = display_name(container)
        in_frames = spf = 0
        check_structure(self._f, container, start, size)
        if container == "MP3":
            # libsndfile takes an MP3's length from its Xing/Info header, or else guesses it,
            # and never reads past that: the frames themselves say what it holds. (Counted
            # now: libsndfile expects the file where it left it.)
            in_frames = mpeg_samples(self._f, start, size)
            spf = (mpeg_frame(read_at(self._f, start, 4)) or (0, 1152))[1]
        elif container == "FLAC":
            self._declared, hidden = flac_declared_frames(self._f, start)
            if hidden is not None:
                source = PatchedFile(self._f, start + STREAMINFO_PACKED, hidden)
        self._f.seek(0)
        try:
            sound = sf.SoundFile(source)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            reason = getattr(exc, "error_string", None) or str(exc)
            raise InvalidAudio(f"cannot read the {name} data: {reason}") from None
        self._sound = sound
        subtype, rate, frames = sound.subtype, sound.samplerate, sound.frames
        if container in LOSSY_SUBTYPES:
            accepted = subtype in LOSSY_SUBTYPES[container]
        else:
            accepted = subtype in INT_SUBTYPE_SCALE or (container == "WAV"
                                                          and subtype in FLOAT_SUBTYPES)
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
            self._at_least = in_frames - mpeg_slack(spf)
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
            capacity = READ_BLOCK_FRAMES
        elif ceiling is None:
            capacity = min(expected + 1, UNTRUSTED_FRAMES)
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
                grown = max(len(buffer) + READ_BLOCK_FRAMES, len(buffer) * 3 // 2)
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
            self._check_not_cut(reason)
            raise InvalidAudio(f"cannot decode the {self.name} data: {reason}")
        return int(count)

    def _check_not_cut(self, reason: str) -> None:
        """A decoding error at the very end of a file short of its declared length: a FLAC
        decoder out of bytes inside a frame says "lost sync", as it does for a damaged one."""
        position = self._f.tell()
        size = self._f.seek(0, io.SEEK_END)
        if self._declared is not None and position >= size and (
                self.frames_read < self._declared):
            raise InvalidAudio(f"the {self.name} data is truncated or corrupt: decoding "
                               f"failed at the end of the file, after {size} bytes "
                               f"({reason.rstrip('.')}); its header announces "
                               f"{self._declared} samples, {self.frames_read} could be read")

    def _read_raw(self, out: np.ndarray) -> int:
        dtype, scale = self._raw
        flat = out.reshape(-1)
        count = 0
        while count < len(flat):
            size = min(len(flat) - count, RAW_CHUNK_BYTES // dtype.itemsize) * dtype.itemsize
            chunk = self._read_bytes(size)
            if not chunk:
                break
            samples = np.frombuffer(chunk, dtype=dtype)
            if scale is None:
                flat[count:count + len(samples)] = samples
            else:
                np.divide(samples, np.float32(scale), out=flat[count:count + len(samples)])
            count += len(samples)
        return count

    def _read_bytes(self, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes; from memory, a view rather than a copy."""
        if isinstance(self._f, MemoryFile):
            return self._f.read_view(size)
        return self._f.read(size)

    def _check_complete(self) -> None:
        name, count = self.name, self.frames_read
        if self._declared is not None and count < self._declared:  # none read, too
            raise InvalidAudio(f"the {name} data is truncated: its header announces "
                               f"{self._declared} samples, {count} could be read")
        if count == 0:
            raise InvalidAudio("the audio is empty" if self._sound is None
                               else f"the {name} data holds no samples")
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
    with open_memory(data, raw_format, sample_rate) as reader:
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
    with open_memory(data, raw_format, sample_rate) as reader:
        return read_decoded(reader, budget, model_rate)


def open_memory(data: bytes, raw_format: str = "f32le",
                sample_rate: int | None = None) -> AudioReader:
    """:func:`open_audio` on bytes in memory, read without copying them."""
    return open_audio(cast(IO[bytes], MemoryFile(data)), raw_format, sample_rate)


def read_decoded(reader: AudioReader, budget: Budget | None = None,
                 model_rate: int | None = None) -> DecodedAudio:
    """Everything ``reader`` holds, checked against ``budget`` as :func:`decode_audio` does."""
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

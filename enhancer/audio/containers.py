"""Recognising a container by its bytes, and the header facts libsndfile does not check.

Sniffing tells WAV, FLAC, MP3 and Ogg from headerless samples by their magic bytes (RIFF,
fLaC, OggS, an ID3 tag or an MPEG frame header), and names the containers that are recognised
but not read (M4A, WebM...) so they are never mistaken for samples. The WAV, FLAC and MPEG
helpers read what a header declares, so a reader can hold a file to it; walking each
container's structure (chunks, metadata blocks, pages, tags, frames) finds one that ends
early, reported by :func:`truncated` as "the X data is truncated: the file ends after N bytes,
where" before libsndfile reads a sample.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import IO, Any

from enhancer.audio.formats import OTHER_CONTAINERS, SUPPORTED_FORMATS_TEXT
from enhancer.errors import InvalidAudio, UnsupportedFormat


def read_at(f: IO[bytes], offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def truncated(name: str, size: int, where: str) -> InvalidAudio:
    """The one way a container that ends early is reported, so every reader says it alike."""
    return InvalidAudio(f"the {name} data is truncated: the file ends after {size} bytes, "
                        f"{where}")


def _id3_end(f: IO[bytes], size: int) -> int:
    """Where the audio starts after any ID3v2 tags at the front (0 when there are none).

    Called only when the data starts with "ID3": a tag the file ends inside is a truncated
    MP3, and a tag header that is not one (version 2-4, sizes of 7-bit bytes) is refused.
    """
    offset = 0
    while True:
        head = read_at(f, offset, 10)
        if head[:3] != b"ID3" and offset:
            return offset
        if len(head) < 10:
            raise truncated("MP3", size, "inside its ID3 tag's header")
        if head[3] not in (2, 3, 4) or any(b & 0x80 for b in head[6:10]):
            raise InvalidAudio("cannot read the MP3 data: it starts with \"ID3\" but not with "
                               "a valid ID3v2 tag header")
        tag = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        offset += 10 + tag + (10 if head[5] & 0x10 else 0)  # the flag says a footer follows
        if offset > size:
            raise truncated("MP3", size, f"inside its ID3 tag ({offset} bytes)")


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


def mpeg_frame(head: bytes, at: int = 0) -> tuple[int, int] | None:
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


def _sync_prefix(rest: bytes) -> bool:
    """True when ``rest`` (under 4 bytes) can be the start of an MPEG or ADTS frame header."""
    return rest[:1] == b"\xff" and (len(rest) < 2 or rest[1] & 0xE0 == 0xE0)


def _frames_follow(f: IO[bytes], offset: int, size: int,
                   frame_length: Callable[[bytes], int | None]) -> bool:
    """True when a frame starts at ``offset`` and another right after it (or the data ends there,
    or inside the next frame's header).

    Two in a row tell a stream from headerless samples that happen to start alike.
    """
    length = frame_length(read_at(f, offset, 8))
    if length is None:
        return False
    after = offset + length
    if after == size or frame_length(read_at(f, after, 8)) is not None:
        return True
    return size - after < 4 and _sync_prefix(read_at(f, after, 4))


def _mpeg_length(head: bytes) -> int | None:
    frame = mpeg_frame(head)
    return None if frame is None else frame[0]


def _unsupported(name: str) -> UnsupportedFormat:
    return UnsupportedFormat(f"{name} audio is not supported; supported formats: "
                             f"{SUPPORTED_FORMATS_TEXT}")


def sniff(f: IO[bytes], size: int) -> tuple[str | None, int]:
    """The container of ``f`` and where it starts (after ID3 tags); None for headerless.

    Raises ``UnsupportedFormat`` naming a container that is recognised but not read.
    """
    head = read_at(f, 0, 12)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return "WAV", 0
    if head[:4] == b"fLaC":
        return "FLAC", 0
    if head[:4] == b"OggS":
        return "OGG", 0
    for offset, magic, name in OTHER_CONTAINERS:
        if head[offset:offset + len(magic)] == magic:
            raise _unsupported(name)
    start = _id3_end(f, size) if head[:3] == b"ID3" else 0
    if start and read_at(f, start, 4) == b"fLaC":
        return "FLAC", start
    if _frames_follow(f, start, size, _adts_frame_length):
        raise _unsupported("AAC (ADTS)")
    first = mpeg_frame(read_at(f, start, 4))
    if start or _frames_follow(f, start, size, _mpeg_length):
        return "MP3", start
    if first is not None and first[0] > size:
        # A frame header, and the data ends inside that frame: an MP3 cut short, not samples.
        raise truncated("MP3", size, f"inside its first frame ({first[0]} bytes)")
    return None, 0


def check_wav_header(f: IO[bytes], size: int) -> None:
    """Refuse a WAV header libsndfile would misread, or a file that ends before its samples do.

    libsndfile reads a PCM header declaring, say, 7 bits per sample as 8-bit audio, and reads
    quietly what is there of a truncated data chunk. Data sizes of 0 and 0xFFFFFFFF mean
    "unknown" (files written to a pipe) and are let through; RF64 gives the real size in its
    ds64 chunk. A RIFF form other than WAVE is left to libsndfile to name.
    """
    head = read_at(f, 0, 12)
    if len(head) < 12:
        raise truncated("WAV", size, "inside its header")
    if head[8:12] != b"WAVE":
        return
    endian = ">" if head[:4] == b"RIFX" else "<"
    position, ds64_size = 12, None  # RF64 gives the data's size in its ds64 chunk
    while True:
        if position + 8 > size:
            raise truncated("WAV", size, "before its data chunk" if position == size
                            else "inside its header")
        chunk = read_at(f, position, 8)
        chunk_id, chunk_size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
        if not all(32 <= b < 127 for b in chunk_id):
            return  # lost (a chunk's pad byte left out, say): left to libsndfile to name
        if chunk_id == b"fmt " and chunk_size >= 16:
            _check_wav_format(read_at(f, position + 8, 16), endian, size)
        if chunk_id == b"ds64" and chunk_size >= 16:
            ds64_size = struct.unpack("<Q", read_at(f, position + 16, 8).ljust(8, b"\0"))[0]
        if chunk_id == b"data":
            available = size - position - 8
            if head[:4] == b"RF64" and chunk_size == 0xFFFFFFFF and ds64_size is not None:
                chunk_size = ds64_size
            if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                raise InvalidAudio(f"the WAV data is truncated: its header announces "
                                   f"{chunk_size} bytes of samples, {available} are present")
            return
        position += 8 + chunk_size + (chunk_size & 1)


def _check_wav_format(body: bytes, endian: str, size: int) -> None:
    if len(body) < 16:
        raise truncated("WAV", size, "inside its header")
    tag, channels, _, _, block_align, bits = struct.unpack(endian + "HHIIHH", body)
    # PCM, IEEE float, extensible: the formats whose samples are whole bytes.
    if tag in (1, 3, 0xFFFE) and (bits == 0 or bits % 8 or block_align != channels * bits // 8):
        raise InvalidAudio(f"the WAV header is inconsistent: {bits} bits per sample "
                           f"and a block of {block_align} bytes for {channels} "
                           f"channel(s); samples must be whole bytes (8, 16, 24 or "
                           f"32 bits) and a block one sample per channel")


def check_flac_metadata(f: IO[bytes], start: int, size: int) -> None:
    """Refuse a FLAC that ends inside its metadata blocks, or right after them.

    Only a chain that starts with a STREAMINFO block of its fixed size is followed; anything
    else is left to libsndfile to name.
    """
    position, first = start + 4, True
    while True:
        head = read_at(f, position, 4)
        if len(head) < 4:
            raise truncated("FLAC", size, "inside its header")
        kind, length = head[0] & 0x7F, int.from_bytes(head[1:], "big")
        if kind > 6 or (first and (kind, length) != (0, 34)):
            return
        position, first = position + 4 + length, False
        if position > size:
            raise truncated("FLAC", size, "inside its header")
        if head[0] & 0x80:
            break
    if position == size:
        raise truncated("FLAC", size, "right after its header, before any audio frame")


def check_ogg_pages(f: IO[bytes], size: int) -> None:
    """Refuse an Ogg that ends inside a page, or without its end-of-stream page.

    libvorbisfile and libopusfile decode a cut stream up to its last whole page without a
    word. Pages are walked by their headers (no audio is decoded); data that stops looking
    like Ogg pages is left to libsndfile to name.
    """
    position, flags = 0, 0
    while position < size:
        head = read_at(f, position, 27)
        if not b"OggS".startswith(head[:4]) or (len(head) > 4 and head[4] != 0):
            return
        if len(head) < 27:
            raise truncated("Ogg", size, "inside a page header")
        table = read_at(f, position + 27, head[26])
        if len(table) < head[26]:
            raise truncated("Ogg", size, "inside a page header")
        position, flags = position + 27 + len(table) + sum(table), head[5]
        if position > size:
            raise truncated("Ogg", size, "inside a page")
    if not flags & 4:
        raise truncated("Ogg", size, "before its last page (the one marked end-of-stream)")


def check_structure(f: IO[bytes], container: str, start: int, size: int) -> None:
    """Refuse a WAV, FLAC or Ogg whose header is inconsistent or that ends early (MP3:
    :func:`mpeg_samples`), before libsndfile reads it."""
    if container == "WAV":
        check_wav_header(f, size)
    elif container == "FLAC":
        check_flac_metadata(f, start, size)
    elif container == "OGG":
        check_ogg_pages(f, size)


# FLAC: STREAMINFO is the first metadata block; its 8 bytes at offset 10 pack the sample rate
# (20 bits), channels - 1 (3), bits - 1 (5) and the total samples per channel (36, 0 unknown).
STREAMINFO_PACKED = 4 + 4 + 10  # "fLaC", the block header, sizes
_TOTAL_SAMPLES_MASK = (1 << 36) - 1


def flac_declared_frames(f: IO[bytes], start: int) -> tuple[int | None, bytes | None]:
    """The total samples STREAMINFO declares (None: unknown), and the bytes that hide it."""
    head = read_at(f, start, STREAMINFO_PACKED + 8)
    if len(head) < STREAMINFO_PACKED + 8 or head[4] & 0x7F != 0:
        return None, None  # no STREAMINFO first: let libsndfile say what is wrong
    packed = int.from_bytes(head[STREAMINFO_PACKED:], "big")
    total = packed & _TOTAL_SAMPLES_MASK
    hidden = (packed & ~_TOTAL_SAMPLES_MASK).to_bytes(8, "big")
    return total or None, hidden


class PatchedFile(io.RawIOBase):
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


def mpeg_samples(f: IO[bytes], start: int, size: int) -> int:
    """Samples per channel in the MPEG frames from ``start`` up to the first non-frame byte.

    An upper bound of what a decoder gives (it also counts the Xing/Info frame, the encoder's
    delay and padding), found without decoding anything. Raises ``InvalidAudio`` when the
    file ends inside a frame (or inside the header of one).
    """
    samples, position, base, chunk = 0, start, start, b""
    while True:
        at = position - base
        if at + 4 > len(chunk):
            base, chunk, at = position, read_at(f, position, 1 << 20), 0
        frame = mpeg_frame(chunk, at)
        if frame is None:
            if position > size or (size - position < 4 and _sync_prefix(chunk[at:])):
                raise truncated("MP3", size, "inside a frame")
            return samples
        samples += frame[1]
        position += frame[0]


# Samples an MP3 decoder may leave out of what its frames hold: the Xing/Info frame, the
# encoder's delay (576 + 529) and padding, with room to spare.
def mpeg_slack(samples_per_frame: int) -> int:
    return 4 * samples_per_frame + 2304


class MemoryFile(io.BufferedIOBase):
    """A read-only file over bytes already in memory, without copying them (``io.BytesIO``
    copies the whole buffer the first time a view of it is asked for)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def read_view(self, size: int = -1) -> memoryview:
        """Like :meth:`read`, as a view of the data."""
        stop = len(self._view) if size is None or size < 0 else self._at + size
        view = self._view[self._at:stop]
        self._at += len(view)
        return view

    def read(self, size: int | None = -1) -> bytes:
        return bytes(self.read_view(-1 if size is None else size))

    def readinto(self, buffer: Any) -> int:
        view = self.read_view(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[:len(view)] = view
        return len(view)

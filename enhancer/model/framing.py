"""Split audio into model frames and put the model's frames back together.

Knows frame length (and hop, where a model declares one); nothing of the model or processes.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

WINDOWS = ("none", "sqrt-hann")


class Frames(Protocol):
    """The frames of one channel, ready for the model, handed out in blocks."""

    num_samples: int
    num_frames: int

    def block(self, start: int, max_count: int) -> np.ndarray:
        """Up to ``max_count`` consecutive frames from frame ``start``, ``[n, frame]`` float32."""
        ...


def frame_count(num_samples: int, frame_length: int) -> int:
    """Frames needed to cover ``num_samples``: the last one is zero-padded."""
    return math.ceil(num_samples / frame_length)


def to_frames(audio: np.ndarray, frame_length: int) -> np.ndarray:
    """Return ``[frame_count, frame_length]`` float32 frames of 1-D ``audio``.

    The last frame is zero-padded.
    """
    num_frames = frame_count(audio.shape[0], frame_length)
    frames = np.zeros((num_frames, frame_length), dtype=np.float32)
    frames.reshape(-1)[: audio.shape[0]] = audio
    return frames


def from_frames(frames: np.ndarray, num_samples: int) -> np.ndarray:
    """Inverse of :func:`to_frames`: concatenate the frames and drop the padding."""
    return frames.reshape(-1)[:num_samples]


class FrameSource:
    """The frames of 1-D audio, without copying it.

    Full frames are a view of the audio; only the last, partial frame is a zero-padded copy.
    The audio must not change while its frames are in use.
    """

    def __init__(self, audio: np.ndarray, frame_length: int) -> None:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        self.num_samples = audio.shape[0]
        full = self.num_samples // frame_length
        self._full = audio[: full * frame_length].reshape(full, frame_length)
        rest = audio[full * frame_length:]
        self._tail = to_frames(rest, frame_length) if rest.size else None
        self.num_frames = full + (self._tail is not None)

    def block(self, start: int, max_count: int) -> np.ndarray:
        """Up to ``max_count`` consecutive frames from frame ``start``, as one C-contiguous array.

        A block ends where the full frames end, so the padded tail is always a block of its own.
        """
        full = self._full.shape[0]
        if start < full:
            return self._full[start:min(start + max_count, full)]
        assert self._tail is not None, f"frame {start} is past the end"
        return self._tail


def sqrt_hann(frame_length: int) -> np.ndarray:
    """Periodic sqrt-Hann window: its square, shifted by half a frame, sums to 1."""
    n = np.arange(frame_length)
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / frame_length)).astype(np.float32)


def overlapped_frame_count(num_samples: int, frame_length: int, hop_length: int) -> int:
    """Frames ``hop`` apart covering ``num_samples`` after ``frame - hop`` samples of lead-in."""
    if num_samples == 0:
        return 0
    return (frame_length - hop_length + num_samples - 1) // hop_length + 1


class WindowedFrames:
    """Overlapping frames ``hop`` apart, each multiplied by the analysis window.

    The audio is padded with ``frame - hop`` zeros in front (half a frame at 50 % overlap) and
    enough at the end that every sample lies under ``frame / hop`` frames.
    """

    def __init__(self, audio: np.ndarray, frame_length: int, hop_length: int,
                 window: np.ndarray) -> None:
        self.num_samples = audio.shape[0]
        self.num_frames = overlapped_frame_count(self.num_samples, frame_length, hop_length)
        if self.num_frames == 0:
            self._frames = np.zeros((0, frame_length), np.float32)
            return
        lead = frame_length - hop_length
        padded = np.zeros((self.num_frames - 1) * hop_length + frame_length, np.float32)
        padded[lead:lead + self.num_samples] = audio
        view = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
        self._frames = view * window

    def block(self, start: int, max_count: int) -> np.ndarray:
        return self._frames[start:start + max_count]


class Framing:
    """How a model sees audio: frame length, hop and window, from its model card.

    With hop equal to the frame and no window (the passthrough), frames are consecutive and
    the result is bit-exact; with a smaller hop, frames overlap and are windowed with
    sqrt-Hann on the way in and out, then overlap-added. A model with ``context`` frames of
    look-back sees that many frames before each block (zeros before the audio starts). A
    model on a ``grid`` of cells (a recurrent one) has every block of a file start at a
    multiple of ``grid`` frames.
    """

    def __init__(self, frame_length: int, hop_length: int | None = None,
                 window: str = "none", context: int = 0, grid: int = 0) -> None:
        hop_length = frame_length if hop_length is None else hop_length
        for name, value in (("context_frames", context), ("grid_frames", grid)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"'{name}' must be a whole number from 0, got {value!r}")
        if hop_length < 1 or frame_length % hop_length:
            raise ValueError(f"'hop_length' {hop_length} must divide the frame length "
                             f"{frame_length}")
        if window not in WINDOWS:
            raise ValueError(f"'window' must be one of {', '.join(WINDOWS)}, got {window!r}")
        if (hop_length < frame_length) != (window == "sqrt-hann") or (
                window == "sqrt-hann" and frame_length // hop_length < 2):
            raise ValueError(f"overlapping frames need window 'sqrt-hann' and a hop of at most "
                             f"half a frame; consecutive frames need window 'none' (hop "
                             f"{hop_length}, frame {frame_length}, window {window!r})")
        self.frame_length, self.hop_length, self.window = frame_length, hop_length, window
        # Frames of look-back the model needs before each frame it enhances: a block of n
        # frames goes to the model as n + context frames, and the first context outputs
        # are dropped (enhancer.model.grid.run_segment).
        self.context = context
        self.grid = grid
        self.overlapping = hop_length < frame_length
        if self.overlapping:
            self._window = sqrt_hann(frame_length)
            # Overlap-added squared sqrt-Hann windows sum to frame / (2 hop).
            self._synthesis = self._window * np.float32(2 * hop_length / frame_length)

    def with_context(self, context: int) -> Framing:
        """The same framing with ``context`` frames of look-back."""
        return Framing(self.frame_length, self.hop_length, self.window, context, self.grid)

    @property
    def window_array(self) -> np.ndarray:
        """The analysis window frames are multiplied by (overlapping framing only)."""
        return self._window

    @property
    def synthesis_array(self) -> np.ndarray:
        """The window processed frames are multiplied by before overlap-add."""
        return self._synthesis

    def split(self, audio: np.ndarray) -> Frames:
        """The frames to run through the model (``num_frames``, ``block(start, count)``)."""
        if self.overlapping:
            return WindowedFrames(audio, self.frame_length, self.hop_length, self._window)
        return FrameSource(audio, self.frame_length)

    def frame_count(self, num_samples: int) -> int:
        if not self.overlapping:
            return frame_count(num_samples, self.frame_length)
        return overlapped_frame_count(num_samples, self.frame_length, self.hop_length)

    def join(self, processed: np.ndarray, num_samples: int) -> np.ndarray:
        """The model's frames put back into ``num_samples`` of audio."""
        if not self.overlapping:
            return from_frames(processed, num_samples)
        hop, ratio = self.hop_length, self.frame_length // self.hop_length
        count = processed.shape[0]
        shaped = (processed * self._synthesis).reshape(count, ratio, hop)
        out = np.zeros((count + ratio - 1, hop), np.float32)
        for part in range(ratio):
            out[part:part + count] += shaped[:, part]
        lead = self.frame_length - hop
        return out.reshape(-1)[lead:lead + num_samples]

"""Split audio into model frames and put the model's frames back together.

Knows frame length (and hop, where a model declares one); nothing of the model or processes.
"""

from __future__ import annotations

import math

import numpy as np


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
        return self._tail

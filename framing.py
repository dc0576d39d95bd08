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

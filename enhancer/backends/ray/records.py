"""The Ray backend's dispatcher records: segment sizes and the deployment's state.

Its sessions are the pool's (:class:`enhancer.backends.pool.records.Session`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MIN_SEGMENT_FRAMES = 64


def replica_segment_frames(num_frames: int, replicas: int, frames_per_call: int) -> int:
    """Frames per segment for a job: every replica gets the same number of segments, each of
    at least ``frames_per_call`` frames when the job is that long (else at least
    ``MIN_SEGMENT_FRAMES``). 1210 frames on 2 replicas: 4 of 303, not 5 of 256 (3 rounds on
    one replica while the other idles for one)."""
    replicas = max(1, replicas)
    rounds = max(1, num_frames // (replicas * frames_per_call))
    size = math.ceil(num_frames / (replicas * rounds))
    return max(1, min(num_frames, max(size, MIN_SEGMENT_FRAMES)))


@dataclass
class DeploymentState:
    """What the last look at the Serve application found."""

    app_status: str = "NOT_STARTED"
    message: str = ""
    target: int = 0
    running: dict[str, tuple[str, int]] = field(default_factory=dict)
    """replica ID → (node ID, pid) of every RUNNING replica."""
    window: int = 1


def plain(value: Any) -> str:
    """An enum's value (Serve's details hold ``ApplicationStatus.RUNNING``), else ``str``."""
    return str(getattr(value, "value", value))

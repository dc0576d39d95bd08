"""The in-flight memory budget (MAX_INFLIGHT_MB): what requests may hold at once, in bytes.

Memory is bounded by this setting, not by the request count: a body is held against it while
it arrives (:class:`service.middleware.EnhanceLimits`), and the working memory of its
enhancement once its size is known (``POST /enhance``).
"""

from __future__ import annotations

from enhancer.audio.formats import decoded_samples
from enhancer.errors import Overloaded, TooLarge

# What a request holds while it is enhanced, per sample at the larger of its rate and the
# model's: the decoded audio, the resampled channels, the model's output and the encoded
# answer (measured: 14-16 bytes).
WORKING_BYTES_PER_SAMPLE = 16


def working_memory(frames: int, channels: int, sample_rate: int, model_rate: int) -> int:
    """Bytes a request of this size holds while it is enhanced."""
    return WORKING_BYTES_PER_SAMPLE * decoded_samples(frames, channels, sample_rate, model_rate)


class InflightMemory:
    """A budget of bytes that requests in flight may hold, so memory is bounded by a setting,
    not by the request count. Used from the event loop only, so it needs no lock."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.held = 0

    def reserve(self, amount: int) -> None:
        """Take ``amount`` bytes, or raise ``Overloaded`` (503) if the budget has no room.

        A request that could never fit (more than the whole budget) gets ``TooLarge`` (413).
        """
        if amount > self.limit:
            raise TooLarge(f"enhancing this request needs about {amount / 1e6:.0f} MB, more than "
                           f"MAX_INFLIGHT_MB={self.limit / 1e6:g}")
        if self.held + amount > self.limit:
            raise Overloaded(f"the service is busy: requests in flight hold "
                             f"{self.held / 1e6:.0f} MB of its {self.limit / 1e6:g} MB; "
                             f"retry later")
        self.held += amount

    def release(self, amount: int) -> None:
        self.held -= amount

    def reservation(self) -> Reservation:
        """``with memory.reservation() as held: held.add(n)``: given back when the block ends."""
        return Reservation(self)


class Reservation:
    """Bytes held of an :class:`InflightMemory` until the ``with`` block ends, however it
    ends: what was refused was never held, so nothing more is given back."""

    def __init__(self, memory: InflightMemory) -> None:
        self.memory = memory
        self.amount = 0

    def add(self, amount: int) -> None:
        """Hold ``amount`` bytes more, or raise as :meth:`InflightMemory.reserve` does."""
        self.memory.reserve(amount)
        self.amount += amount

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.memory.release(self.amount)
        self.amount = 0

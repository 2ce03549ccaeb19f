"""Bandwidth limiting for streamed copies (`spec.copy.bandwidthLimit`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class RateLimiter(Protocol):
    """Anything that can make a stream wait before it moves `nbytes` more bytes."""

    async def acquire(self, nbytes: int) -> None: ...


class TokenBucket:
    """A token bucket shared by every stream of a worker: `rate` bytes/s, `burst` bytes.

    Taking more than the bucket holds is allowed and goes into debt: the caller sleeps
    until the debt is repaid, and later callers queue behind it. So a 1 MiB chunk under a
    100 KiB/s limit waits ~10 s instead of never fitting, and the long-run rate holds for
    any mix of chunk sizes and concurrent streams.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self, nbytes: int) -> float:
        """Take `nbytes` now and return how long the caller must wait (seconds)."""
        self._refill()
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self, nbytes: int) -> None:
        delay = self.reserve(nbytes)
        if delay > 0:
            await asyncio.sleep(delay)

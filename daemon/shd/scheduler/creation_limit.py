"""The client-side creation limit: every create waits for a token of `limits.RateLimiter`'s bucket
(`replicate.creations_per_minute`); a 429 holds all creates for the server's hint and halves the rate (once per
hold); each create that goes through doubles it again, up to the ceiling. The arithmetic is pure (limits.py); this
adds the lock and the waiting, which a stop interrupts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from shd.limits import RateLimiter
from shd.scheduler.dispatch import Stopped


class CreationLimit:
    """Thread-safe; shared by every worker."""

    def __init__(self, per_minute: float, *, stop: threading.Event, clock: Callable[[], float]):
        self._limiter = RateLimiter(per_minute)
        self._lock = threading.Lock()
        self._stop = stop
        self._clock = clock

    def wait(self) -> None:
        """Block until a create may be sent; Stopped if the engine stops meanwhile."""
        while True:
            with self._lock:
                wait = self._limiter.reserve(self._clock())
            if wait <= 0:
                return
            if self._stop.wait(wait):
                raise Stopped

    def throttled(self, retry_after: float) -> float:
        """A 429: slow down and hold for `retry_after` s. Returns the new rate (creates a minute)."""
        with self._lock:
            self._limiter.throttled(self._clock(), retry_after)
            return self._limiter.rate_per_minute

    def succeeded(self) -> None:
        with self._lock:
            self._limiter.succeeded()

    def set_rate(self, per_minute: float) -> None:
        with self._lock:
            self._limiter.set_rate(per_minute)

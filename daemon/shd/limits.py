"""PURE: the client-side limits on paid calls. Time is always passed in; nothing here sleeps or reads a clock.

- `RateLimiter`: a token bucket on prediction creations (Replicate documents 600/min). A 429 holds everything until
  the server's `retry_after` and halves the rate, once per hold however many 429s arrive meanwhile (those were
  sent before the first came back); each create that goes through doubles it again, up to the ceiling, so a storm
  of 429s costs the waits the server asked for and the rate is back as soon as creates succeed.
- `backoff()`: exponential backoff with full jitter, capped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (1-based): uniform in [d/2, d], d = min(cap, base * 2^(attempt-1))."""
    d = min(cap, base * 2.0 ** max(0, attempt - 1))
    r = rng.random() if rng is not None else random.random()
    return d / 2 + r * d / 2


@dataclass
class RateLimiter:
    """Token bucket: `per_minute` creations, bursts up to `burst`. Call `reserve(now)` -> seconds to wait (0: go)."""

    per_minute: float
    burst: float = 10.0
    min_per_minute: float = 6.0
    _rate: float = field(init=False)          # current tokens per second (lowered by 429s)
    _tokens: float = field(init=False)
    _last: float | None = field(init=False, default=None)
    _hold_until: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._rate = self.per_minute / 60.0
        self._tokens = min(self.burst, max(1.0, self.per_minute / 60.0))

    @property
    def rate_per_minute(self) -> float:
        return self._rate * 60.0

    def set_rate(self, per_minute: float) -> None:
        """A new configured ceiling (config reload)."""
        self.per_minute = per_minute
        self._rate = min(self._rate, per_minute / 60.0) if self._last is not None else per_minute / 60.0

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self._rate)
        self._last = now if self._last is None else max(self._last, now)

    def reserve(self, now: float) -> float:
        """Take one token if one is there and no hold is in force: returns 0.0. Else the seconds until one can be."""
        self._refill(now)
        if now < self._hold_until:
            return self._hold_until - now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def throttled(self, now: float, retry_after: float | None) -> None:
        """A 429 came back: hold for `retry_after` (or 1 s) and halve the rate (not below `min_per_minute`), unless
        a hold is already in force: a 429 answering a create sent before the first one came back says nothing new."""
        self._refill(now)
        if now >= self._hold_until:
            self._rate = max(self.min_per_minute / 60.0, self._rate / 2)
        self._tokens = 0.0
        self._hold_until = max(self._hold_until, now + (retry_after if retry_after is not None else 1.0))
        self._last = self._hold_until  # no tokens accrue during the hold: no burst the moment it ends

    def succeeded(self) -> None:
        """A create went through: the rate doubles again, up to the configured ceiling."""
        self._rate = min(self.per_minute / 60.0, self._rate * 2)

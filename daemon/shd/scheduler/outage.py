"""The API outage: while no request reaches Replicate, every task waits, with one shared and growing backoff.

A request that provably never reached the server (`Transient.unreachable`: no connection could be made) is not a
failure of its frame: it spends no attempt and nothing was billed. It means the API is unreachable for everyone, so
this gate (one of the dispatcher's, beside the auth pause) holds every task:

- The first such failure opens the outage (`since`, and the last error, are what `shd status`, STATUS=, the web
  page and the `daemon.paused` hook show as the reason).
- When the hold is over, ONE task is let through to try again (a probe); the others stay held. If it cannot connect
  either, the next hold is longer: exponential backoff with jitter from `backoff_base` up to `backoff_max`, so the
  delay grows while the outage lasts, for all frames together, instead of every worker retrying on its own.
- Any request that reaches the server (the probe's, or a late answer to one already in flight) ends the outage and
  lets every task go again.
- A failure reported while a hold is in force (a request that was already on its way when the outage began) only
  updates the last error: it says nothing new about the server.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from shd import logs
from shd.limits import backoff

KIND = "unreachable"


class Outage:
    """The 'Replicate cannot be reached' gate. Thread-safe; `clock` is monotonic, `wall` gives epoch seconds."""

    kind = KIND

    def __init__(self, *, backoff_base: float, backoff_max: float, clock: Callable[[], float],
                 on_change: Callable[[], None], wall: Callable[[], float] = time.time,
                 rng: random.Random | None = None):
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.clock = clock
        self.wall = wall
        self.on_change = on_change
        self.rng = rng
        self.log = logs.get()
        self._lock = threading.Lock()
        self._since: float | None = None     # wall clock: when the first request failed to connect
        self._last_error = ""
        self._tries = 0                      # failed tries so far (the first failure, then each probe)
        self._hold_until = 0.0
        self._released = False               # the hold ended and one task went to try again

    @property
    def since(self) -> float | None:
        """When the outage began (epoch seconds), or None while the API answers."""
        return self._since

    @property
    def tries(self) -> int:
        """Failed tries in this outage (the first failure, then each probe's); 0 while the API answers."""
        return self._tries

    @property
    def paused(self) -> str | None:
        """The reason shown everywhere while the API cannot be reached, or None."""
        with self._lock:
            if self._since is None:
                return None
            return reason(self._since, self._last_error)

    def failed(self, error: str) -> float:
        """A request could not reach the server. Returns the seconds every task is now held for."""
        with self._lock:
            now = self.clock()
            self._last_error = error
            if self._since is None:
                self._since = self.wall()
                self._tries = 1
            elif self._released:
                self._tries += 1
            else:
                return max(0.0, self._hold_until - now)   # already known: nothing new about the server
            self._released = False
            delay = backoff(self._tries, base=self.backoff_base, cap=self.backoff_max, rng=self.rng)
            self._hold_until = now + delay
            first = self._tries == 1
        if first:
            self.log.error("replicate_unreachable", error=error, retry_in=round(delay, 2),
                           hint="every task waits; shd tries again with a growing delay and goes on by itself")
        else:
            self.log.warning("replicate_still_unreachable", error=error, tries=self._tries, retry_in=round(delay, 2))
        self.on_change()
        return delay

    def reached(self) -> None:
        """A request reached the server: the outage, if any, is over."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._since = self._since, None
            self._tries, self._released, self._last_error = 0, False, ""
        if since is not None:
            self.log.info("replicate_reachable_again", unreachable_for=round(self.wall() - since, 1))
            self.on_change()

    def hold(self, now: float) -> float | None:
        """The dispatcher's gate: None while tasks may go; else seconds to hold them. When a hold is over, one task
        may go (the probe) and the others are held for as long again, until its result says what follows."""
        with self._lock:
            if self._since is None:
                return None
            if now < self._hold_until:
                return self._hold_until - now
            self._released = True
            delay = backoff(max(1, self._tries), base=self.backoff_base, cap=self.backoff_max, rng=self.rng)
            self._hold_until = now + delay
            return None


def reason(since: float, last_error: str) -> str:
    """'waiting for Replicate: unreachable since 14:02:31 (last error: ...)', local time."""
    at = time.strftime("%H:%M:%S", time.localtime(since))
    return f"waiting for Replicate: unreachable since {at} (last error: {last_error})"

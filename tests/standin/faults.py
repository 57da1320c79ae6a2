"""Fault injection rules, prediction outcome overrides, and token-bucket rate limits."""

from __future__ import annotations

import fnmatch
import itertools
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

JSON = dict[str, Any]

FAULT_KINDS = frozenset({"status", "non_json", "delay", "close_before", "close_after", "truncate", "slow_body"})
OUTCOMES = frozenset({"succeeded", "failed", "canceled", "aborted", "stuck"})
_rule_ids = itertools.count(1)


def throttle_body(seconds: int) -> JSON:
    """The real 429 body."""
    return {"detail": f"Request was throttled. Your rate limit resets in ~{seconds}s."}


@dataclass
class FaultRule:
    """A scripted response for requests whose ``"METHOD /path-glob"`` matches ``route``.

    ``kind`` is one of:

    * ``"status"``: answer ``status`` with a realistic body (``body`` overrides; a dict is sent as problem+json);
    * ``"non_json"``: answer ``status`` (default 200) with an HTML body (``body`` overrides);
    * ``"delay"``: sleep ``delay`` seconds, then handle normally (``delay`` also applies before other kinds);
    * ``"close_before"``: close the connection without a response, before handling (nothing is created);
    * ``"close_after"``: handle normally (e.g. create the prediction), then close without a response;
    * ``"truncate"``: handle normally, send the headers and only half the body, then close;
    * ``"slow_body"``: handle normally, send the body in ``chunks`` pieces spread over ``delay`` seconds.

    Selection: each request matching ``route`` counts as call 1, 2, ... (since the rule was added).  The rule
    fires on the calls in ``calls`` (all calls if None), at most ``times`` times in total (unlimited if None),
    each time with probability ``probability`` (seeded RNG; always if None).
    """

    route: str
    kind: str = "status"
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: int | float | str | None = None  # Retry-After value: seconds (int) or verbatim text
    retry_after_date: float | None = None  # Retry-After as an ISO-8601 datetime this many seconds from now
    delay: float = 0.0
    chunks: int = 8
    calls: frozenset[int] | None = None
    times: int | None = None
    probability: float | None = None
    id: int = field(default_factory=lambda: next(_rule_ids))
    seen: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if self.kind == "status" and self.status is None:
            raise ValueError("kind='status' needs status=")
        method, _, pattern = self.route.strip().partition(" ")
        if not pattern:
            method, pattern = "*", method
        self._method, self._pattern = method.upper(), pattern.strip()
        if self.calls is not None:
            self.calls = frozenset(self.calls)

    def matches(self, method: str, path: str) -> bool:
        """Whether the request is on this rule's route."""
        return self._method in ("*", method.upper()) and fnmatch.fnmatchcase(path, self._pattern)

    def to_json(self) -> JSON:
        """A JSON summary."""
        return {"id": self.id, "route": self.route, "kind": self.kind, "status": self.status, "seen": self.seen,
                "hits": self.hits}


@dataclass
class OutcomeRule:
    """Overrides the outcome of predictions created while it is active.

    Matching (all given conditions must hold): ``model`` (``owner/name``), ``match`` (a callable on the input
    dict, in-process only), ``prompt_contains`` (substring of ``input["prompt"]``), ``nth`` (1-based positions
    among the creates of ``model`` seen since the rule was added), ``probability`` (seeded RNG), and at most
    ``times`` applications.  Every rule counts every create of its model, whether or not an earlier rule won;
    the first rule that fires decides.

    Effects: ``outcome`` is the terminal status (``succeeded``/``failed``/``canceled``/``aborted``, or ``stuck``:
    stays ``starting`` until canceled); ``error`` (for ``failed``); ``queue_delay``/``run_time`` (slow runs);
    ``num_outputs`` (fewer images); ``output_null`` (succeeded with ``output: null``); ``missing_version``
    (responses lack ``version``); ``processing_on_timeout`` (a ``Prefer: wait`` that times out answers
    ``processing`` with ``output: null``, or the first output only if ``partial_output``).
    """

    outcome: str = "failed"
    error: str | None = None
    model: str | None = None
    match: Callable[[JSON], bool] | None = None
    prompt_contains: str | None = None
    nth: frozenset[int] | None = None
    times: int | None = None
    probability: float | None = None
    queue_delay: float | None = None
    run_time: float | None = None
    num_outputs: int | None = None
    output_null: bool = False
    missing_version: bool = False
    processing_on_timeout: bool = False
    partial_output: bool = False
    id: int = field(default_factory=lambda: next(_rule_ids))
    seen: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; expected one of {sorted(OUTCOMES)}")
        if self.nth is not None:
            self.nth = frozenset(self.nth)
        if self.outcome == "failed" and self.error is None:
            self.error = "Prediction interrupted; please retry (code: PA)"

    def to_json(self) -> JSON:
        """A JSON summary."""
        return {"id": self.id, "outcome": self.outcome, "error": self.error, "model": self.model,
                "seen": self.seen, "hits": self.hits}


class FaultBook:
    """The active fault and outcome rules (thread-safe), sharing one seeded RNG."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.faults: list[FaultRule] = []
        self.outcomes: list[OutcomeRule] = []

    def add_fault(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.faults.append(rule)
        return rule

    def add_outcome(self, rule: OutcomeRule) -> OutcomeRule:
        with self._lock:
            self.outcomes.append(rule)
        return rule

    def remove(self, rule_id: int) -> None:
        """Remove a fault or outcome rule by id."""
        with self._lock:
            self.faults = [r for r in self.faults if r.id != rule_id]
            self.outcomes = [r for r in self.outcomes if r.id != rule_id]

    def clear(self) -> None:
        """Remove all rules."""
        with self._lock:
            self.faults.clear()
            self.outcomes.clear()

    def _fires(self, position: int, positions: Iterable[int] | None, hits: int, times: int | None,
               probability: float | None) -> bool:
        if positions is not None and position not in positions:
            return False
        if times is not None and hits >= times:
            return False
        return probability is None or self._rng.random() < probability

    def fault_for(self, method: str, path: str) -> FaultRule | None:
        """Count the request against every matching rule; return the first that fires."""
        winner = None
        with self._lock:
            for rule in self.faults:
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if winner is None and self._fires(rule.seen, rule.calls, rule.hits, rule.times, rule.probability):
                    rule.hits += 1
                    winner = rule
        return winner

    def outcome_for(self, model: str, inp: JSON) -> OutcomeRule | None:
        """Count the create against every rule of its model; return the first that fires."""
        winner = None
        with self._lock:
            for rule in self.outcomes:
                if rule.model is not None and rule.model != model:
                    continue
                rule.seen += 1
                if winner is not None:
                    continue
                if rule.prompt_contains is not None and rule.prompt_contains not in str(inp.get("prompt", "")):
                    continue
                if rule.match is not None and not rule.match(inp):
                    continue
                if self._fires(rule.seen, rule.nth, rule.hits, rule.times, rule.probability):
                    rule.hits += 1
                    winner = rule
        return winner

    def random(self) -> random.Random:
        """The shared seeded RNG (callers must hold no lock of ours)."""
        return self._rng


class TokenBucket:
    """A token bucket refilled at ``per_min / 60`` tokens per second, holding at most ``capacity``."""

    def __init__(self, per_min: float, capacity: float | None = None) -> None:
        self.rate = per_min / 60.0
        self.capacity = max(1.0, per_min if capacity is None else capacity)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def available(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0

    def wait_time(self) -> float:
        """Seconds until one token is available."""
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate if self.rate > 0 else math.inf


class RateLimiter:
    """Per-category token buckets: ``create`` (prediction creates) and ``other`` (every other ``/v1`` call).

    Defaults are the documented 600/min and 3000/min, with a burst of one minute's worth.  ``low_credit`` adds
    1/s and 6/min buckets to creates.
    """

    def __init__(self, creates_per_min: float = 600, others_per_min: float = 3000, *, enabled: bool = True,
                 low_credit: bool = False, burst: float | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(creates_per_min, others_per_min, enabled=enabled, low_credit=low_credit, burst=burst)

    def configure(self, creates_per_min: float, others_per_min: float, *, enabled: bool, low_credit: bool,
                  burst: float | None) -> None:
        """Replace the buckets (all start full)."""
        with self._lock:
            self.enabled, self.low_credit = enabled, low_credit
            self.creates_per_min, self.others_per_min, self.burst = creates_per_min, others_per_min, burst
            creates = [TokenBucket(creates_per_min, burst)]
            if low_credit:
                creates += [TokenBucket(60, 1), TokenBucket(6, 6)]
            self.buckets = {"create": creates, "other": [TokenBucket(others_per_min, burst)]}

    def take(self, category: str) -> tuple[bool, int, int]:
        """Try to spend a token: ``(allowed, remaining, reset_seconds)``."""
        with self._lock:
            buckets = self.buckets[category]
            now = time.monotonic()
            if not self.enabled:
                return True, int(buckets[0].capacity) - 1, 1
            empty = [b for b in buckets if not b.available(now)]
            if empty:
                wait = max(b.wait_time() for b in empty)
                return False, 0, max(1, math.ceil(wait)) if math.isfinite(wait) else 3600
            for bucket in buckets:
                bucket.tokens -= 1.0
            return True, int(min(b.tokens for b in buckets)), 1

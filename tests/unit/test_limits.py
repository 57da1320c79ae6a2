"""The pure rate limiter and backoff: time is passed in, nothing sleeps."""

import random

from shd.limits import RateLimiter, backoff


def test_the_limiter_keeps_creations_under_the_set_rate() -> None:
    """Over 60 simulated seconds of greedy callers, no more than rate + burst creations go through."""
    lim = RateLimiter(per_minute=120, burst=5)
    now, granted = 0.0, 0
    while now < 60.0:
        wait = lim.reserve(now)
        if wait == 0.0:
            granted += 1
        else:
            now += wait
    assert 115 <= granted <= 120 + 5


def test_a_429_halves_the_rate_and_holds_until_retry_after() -> None:
    lim = RateLimiter(per_minute=600, burst=10)
    assert lim.reserve(0.0) == 0.0
    lim.throttled(1.0, retry_after=3.0)
    assert lim.rate_per_minute == 300
    assert lim.reserve(1.0) == 3.0
    assert lim.reserve(4.0) > 0  # the bucket was emptied; it refills at the lowered rate
    assert lim.reserve(4.5) == 0.0


def test_successes_let_the_rate_recover_but_never_above_the_ceiling() -> None:
    lim = RateLimiter(per_minute=600)
    lim.throttled(0.0, None)
    for _ in range(100):
        lim.succeeded()
    assert lim.rate_per_minute == 600


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [backoff(n, base=1.0, cap=8.0, rng=rng) for n in range(1, 7)]
    assert 0.5 <= delays[0] <= 1.0
    assert 2.0 <= delays[2] <= 4.0
    assert all(4.0 <= d <= 8.0 for d in delays[3:])

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


def test_429s_that_arrive_during_a_hold_cut_the_rate_only_once() -> None:
    """Sixteen creates in flight all get a 429 from the same window: one halving, not sixteen."""
    lim = RateLimiter(per_minute=600)
    lim.throttled(0.0, retry_after=2.0)
    for i in range(15):
        lim.throttled(0.01 * i, retry_after=2.0)
    assert lim.rate_per_minute == 300


def test_the_rate_is_back_at_the_ceiling_a_few_creates_after_a_429() -> None:
    lim = RateLimiter(per_minute=600)
    for t in range(6):  # six 429s in six separate windows
        lim.throttled(float(t * 10), retry_after=1.0)
    assert lim.rate_per_minute < 20
    for _ in range(6):
        lim.succeeded()
    assert lim.rate_per_minute == 600


def test_a_storm_of_random_429s_never_sinks_the_rate_to_its_floor() -> None:
    """One create in five refused at random (the benchmark's storm): the rate stays near the ceiling; today's 5%
    recovery per success sank it to the 6/min floor."""
    rng = random.Random(3)
    lim = RateLimiter(per_minute=600)
    now, rates = 0.0, []
    while len(rates) < 400:
        wait = lim.reserve(now)
        if wait > 0:
            now += wait + 1e-9
            continue
        if rng.random() < 0.2:
            lim.throttled(now, retry_after=1.0)
        else:
            lim.succeeded()
        rates.append(lim.rate_per_minute)
    assert min(rates) > lim.min_per_minute and sum(rates) / len(rates) >= 400

"""The retry policy of the paid stages, with plain values: what follows each kind of failure, how many paid attempts
a frame gets, and what a failed create leaves in the ledger."""

import random

import pytest

from shd.config import Replicate
from shd.errors import AuthFailed, ModelFailed, OutputGone, RateLimited, Rejected, Transient
from shd.scheduler.retry import (
    FailFrame,
    History,
    Pause,
    Retry,
    WaitForService,
    attempts_exhausted,
    create_outcome,
    decide,
)

SETTINGS = Replicate(max_attempts=3, model_retries=2, backoff_base=1.0, backoff_max=8.0)
NSFW = ModelFailed("model error: NSFW content detected", retry_with_new_seed=True)


def test_a_429_waits_for_the_servers_hint_and_slows_the_creation_limiter() -> None:
    assert decide(RateLimited("rate limited (429)", 7.0), History(), SETTINGS) == Retry(
        7.0, "rate limited (429)", slow_down=True)
    assert decide(RateLimited("rate limited (429)"), History(), SETTINGS).after == 1.0  # no hint: a second


def test_refused_credentials_pause_all_work() -> None:
    assert decide(AuthFailed("Replicate refused the credentials (401)"), History(), SETTINGS) == Pause(
        "Replicate refused the credentials (401)")


def test_nsfw_gets_a_new_seed_at_once_until_model_retries_are_spent() -> None:
    assert decide(NSFW, History(new_seeds=0), SETTINGS) == Retry(0.0, f"new seed after: {NSFW}", new_seed=True)
    assert decide(NSFW, History(new_seeds=1), SETTINGS) == Retry(0.0, f"new seed after: {NSFW}", new_seed=True)
    assert decide(NSFW, History(new_seeds=2), SETTINGS) == FailFrame(str(NSFW))


def test_a_model_error_no_seed_helps_and_a_rejected_input_fail_the_frame_with_the_reason() -> None:
    assert decide(ModelFailed("model error: invalid image"), History(), SETTINGS) == FailFrame(
        "model error: invalid image")
    assert decide(Rejected("Replicate rejected the request (422): bad"), History(), SETTINGS) == FailFrame(
        "Replicate rejected the request (422): bad")


def test_an_expired_output_is_created_again_at_once() -> None:
    assert decide(OutputGone("output file is gone (404)"), History(("succeeded",)), SETTINGS) == Retry(
        0.0, "output file is gone (404)")


@pytest.mark.parametrize(("tries", "low", "high"), [(0, 0.5, 1.0), (1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0),
                                                    (9, 4.0, 8.0)])
def test_transient_failures_back_off_exponentially_with_jitter_up_to_the_cap(tries: int, low: float,
                                                                             high: float) -> None:
    history = History(("failed",) * tries)
    delays = [decide(Transient("Replicate error 503"), history, SETTINGS, random.Random(s)) for s in range(50)]
    assert all(isinstance(d, Retry) and not d.new_seed and not d.slow_down for d in delays)
    after = [d.after for d in delays if isinstance(d, Retry)]
    assert low <= min(after) < max(after) <= high


def test_a_transient_hint_longer_than_the_backoff_is_honoured() -> None:
    decision = decide(Transient("busy", retry_after=30.0), History(), SETTINGS, random.Random(1))
    assert isinstance(decision, Retry) and decision.after == 30.0


def test_only_paid_attempts_count_against_max_attempts() -> None:
    """Refused creates (a 429, a 401) created nothing and cost nothing: they never use up the budget."""
    refused_many = History(("refused",) * 10 + ("failed", "lost"), last_error="503")
    assert refused_many.paid == 2
    assert attempts_exhausted("image", refused_many, SETTINGS) is None
    spent = History(("failed", "refused", "lost", "canceled"), last_error="Replicate error 503")
    assert attempts_exhausted("image", spent, SETTINGS) == "image failed after 3 attempts: Replicate error 503"


def test_a_failed_create_is_recorded_as_refused_lost_or_failed() -> None:
    """Turned away: refused (not a paid attempt). Maybe created (the answer was lost): lost (counted, looked up).
    Anything else: failed."""
    assert create_outcome(RateLimited("429", 1.0)) == "refused"
    assert create_outcome(AuthFailed("401")) == "refused"
    assert create_outcome(Transient("read timeout", maybe_created=True)) == "lost"
    assert create_outcome(Transient("connect refused", unreachable=True)) == "refused"  # never reached the server
    assert create_outcome(Transient("Replicate error 503")) == "failed"
    assert create_outcome(Rejected("422")) == "failed"


def test_an_unreachable_api_is_not_the_frames_failure_every_task_waits_for_it() -> None:
    """No connection: the frame spent no attempt, however often it happens; the outage gate holds everything."""
    err = Transient("network error: ConnectError: [Errno 111] Connection refused", unreachable=True)
    assert decide(err, History(("refused",) * 20), SETTINGS) == WaitForService(str(err))


def test_a_tasks_backoff_grows_with_its_failures_in_a_row_even_without_ledger_rows() -> None:
    """A poll that keeps getting 503s adds no ledger row: the task's streak makes its delay grow all the same."""
    calm = [decide(Transient("503"), History(streak=0), SETTINGS, random.Random(s)).after for s in range(20)]
    stormy = [decide(Transient("503"), History(streak=3), SETTINGS, random.Random(s)).after for s in range(20)]
    assert max(calm) <= 1.0 and min(stormy) >= 4.0

"""PURE: the retry policy of the paid stages. No I/O and no clock; randomness (the backoff's jitter) is passed in.

`decide(error, history, settings)` says what follows a failed stage:

    RateLimited (429)           retry after the server's hint (1 s without one), and slow the creation limiter
    AuthFailed (401/402/403)    pause all work; the task waits for the pause to end
    ModelFailed, new seed       (e.g. "NSFW content detected") retry at once with a new seed, `model_retries` times
    ModelFailed, Rejected       fail the frame with the reason (`pipeline.on_frame_failure` fills its slot)
    OutputGone                  create it again, at once
    Transient, unreachable      the request never reached the server: not the frame's failure; wait for the API
                                with every other task (scheduler/outage.py holds them all, with a growing backoff)
    Transient (5xx, network)    retry after an exponential backoff with jitter (`backoff_base`, doubling up to
                                `backoff_max`) that grows with the task's failures in a row, or after the server's
                                hint when that is longer

`attempts_exhausted(history, settings)` is asked before every create: at most `max_attempts` paid attempts per frame
and stage since its job (re)started. A create the service turned away (429, 401/402/403) or that never reached it
(no connection) is recorded as `refused` (`create_outcome`) and was not paid for, so it does not count; nor does a
result `reused` instead of paying.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shd.errors import AuthFailed, BackendError, ModelFailed, OutputGone, RateLimited, Rejected, Transient
from shd.limits import backoff

if TYPE_CHECKING:
    from shd.config import Replicate

REFUSED = "refused"   # the ledger status of a create that was turned away: nothing was created or billed
LOST = "lost"         # a recorded prediction the service no longer has, or a create that may or may not exist
REUSED = "reused"     # no call: the result of an earlier paid prediction was used (scheduler/reuse.py)
FAILED = "failed"


@dataclass(frozen=True)
class History:
    """The earlier tries at one stage of one frame since its job (re)started: the ledger's and the task's."""

    outcomes: tuple[str, ...] = ()   # the ledger status of each create, oldest first
    last_error: str | None = None    # why the latest try failed
    new_seeds: int = 0               # retries with a new seed so far
    streak: int = 0                  # the task's transient failures in a row (a poll's 503s add no ledger row)

    @property
    def paid(self) -> int:
        """Creates that may have cost money: all but the refused ones (and results reused without a call)."""
        return sum(1 for o in self.outcomes if o not in (REFUSED, REUSED))


@dataclass(frozen=True)
class Retry:
    """Run the stage again after `after` seconds."""

    after: float
    why: str
    new_seed: bool = False    # paint with another seed
    slow_down: bool = False   # a 429: the creation limiter halves its rate and holds for `after`


@dataclass(frozen=True)
class FailFrame:
    """Give the frame up: `why` is recorded, and the fill policy covers its slot."""

    why: str


@dataclass(frozen=True)
class Pause:
    """Pause all work until the credentials are accepted again."""

    why: str


@dataclass(frozen=True)
class WaitForService:
    """The API cannot be reached: hold every task until it can (the frame spent no attempt)."""

    why: str


Decision = Retry | FailFrame | Pause | WaitForService


def decide(error: BackendError, history: History, settings: Replicate,
           rng: random.Random | None = None) -> Decision:
    """What follows a stage that failed with `error` (see the module docstring)."""
    if isinstance(error, RateLimited):
        return Retry(error.retry_after if error.retry_after is not None else 1.0, str(error), slow_down=True)
    if isinstance(error, AuthFailed):
        return Pause(str(error))
    if isinstance(error, ModelFailed) and error.retry_with_new_seed and history.new_seeds < settings.model_retries:
        return Retry(0.0, f"new seed after: {error}", new_seed=True)
    if isinstance(error, (ModelFailed, Rejected)):
        return FailFrame(str(error))
    if isinstance(error, OutputGone):
        return Retry(0.0, str(error))
    if isinstance(error, Transient) and error.unreachable:
        return WaitForService(str(error))
    attempt = max(1, len(history.outcomes), history.streak + 1)
    delay = backoff(attempt, base=settings.backoff_base, cap=settings.backoff_max, rng=rng)
    if isinstance(error, Transient) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return Retry(delay, str(error))


def attempts_exhausted(stage: str, history: History, settings: Replicate) -> str | None:
    """Why no further create is allowed (the frame fails with it), or None while paid attempts are left."""
    if history.paid < settings.max_attempts:
        return None
    return f"{stage} failed after {history.paid} attempts: {history.last_error}"


def create_outcome(error: BackendError) -> str:
    """The ledger status of a create that raised `error`: `refused` when the service turned it away (429, 401/402/403)
    or it never reached the service (no connection): nothing was created; `lost` when it may have been created though
    its answer never came (it stays counted, and is looked up before anything is sent again), else `failed`."""
    if isinstance(error, (RateLimited, AuthFailed)) or (isinstance(error, Transient) and error.unreachable):
        return REFUSED
    if isinstance(error, Transient) and error.maybe_created:
        return LOST
    return FAILED

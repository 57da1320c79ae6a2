"""The API outage gate with a hand-moved clock: one shared, growing backoff; one probe at a time; any answer ends
it; the reason says since when and why."""

from __future__ import annotations

import random
import time

from shd.scheduler.outage import Outage


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(clock: Clock, changes: list[str] | None = None) -> Outage:
    return Outage(backoff_base=1.0, backoff_max=16.0, clock=clock, wall=lambda: 1_700_000_000.0,
                  on_change=lambda: changes.append("change") if changes is not None else None,
                  rng=random.Random(7))


def test_while_unreachable_every_task_waits_and_the_delay_grows_with_each_failed_probe_up_to_the_cap() -> None:
    clock = Clock()
    outage = make(clock)
    assert outage.hold(clock()) is None and outage.paused is None
    holds = [outage.failed("ConnectError: refused")]
    for _ in range(7):
        clock.t += holds[-1]                    # the hold is over: one task goes to try again
        assert outage.hold(clock()) is None
        assert outage.hold(clock()) is not None  # ... and only one: the others stay held
        holds.append(outage.failed("ConnectError: refused"))
    uncapped = holds[:5]  # d = 1, 2, 4, 8, 16 s, each drawn from [d/2, d]: never shorter than the one before
    assert all(b >= a for a, b in zip(uncapped, uncapped[1:])), holds
    assert holds[0] <= 1.0 and holds[3] >= 4.0 and all(8.0 <= h <= 16.0 for h in holds[4:])


def test_failures_of_requests_already_in_flight_do_not_grow_the_delay() -> None:
    """Eight workers whose requests all fail at the start of an outage are one failure, not eight."""
    clock = Clock()
    outage = make(clock)
    first = outage.failed("refused")
    for _ in range(7):
        clock.t += 0.01
        assert outage.failed("refused again") <= first
    clock.t += first
    assert outage.hold(clock()) is None  # the next probe, after the first (short) delay


def test_any_answer_ends_the_outage_and_releases_every_task() -> None:
    clock = Clock()
    changes: list[str] = []
    outage = make(clock, changes)
    outage.failed("ConnectError: [Errno 111] Connection refused")
    assert outage.hold(clock()) is not None
    expected_time = time.strftime("%H:%M:%S", time.localtime(1_700_000_000.0))
    assert outage.paused == (f"waiting for Replicate: unreachable since {expected_time} "
                             "(last error: ConnectError: [Errno 111] Connection refused)")
    assert outage.since == 1_700_000_000.0
    outage.reached()
    assert outage.paused is None and outage.since is None and outage.hold(clock()) is None
    assert changes == ["change", "change"]  # began, ended: the dispatcher and waiting jobs look again
    outage.failed("refused")  # a new outage starts from the shortest delay again
    assert outage.hold(clock()) <= 1.0

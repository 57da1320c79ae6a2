"""Every reason to hold work as one gate and one reason (holds.py), with the budget among them: what `shd process`
gives up on, and what STATUS= says. Pure: plain values and fake holds."""

from __future__ import annotations

from dataclasses import dataclass

from shd import process
from shd.scheduler.holds import Holds, Paused
from shd.service import summary_line

DAILY = "daily budget $5.00 reached; resumes at 00:00 UTC, or raise budget.daily_usd and reload"
OUTAGE = "waiting for Replicate: unreachable since 14:02:31 (last error: ConnectError)"


@dataclass
class Fake:
    kind: str
    paused: str | None = None
    since: float | None = None
    wait: float | None = None

    def hold(self, now: float) -> float | None:
        return self.wait


def test_a_budget_hold_gives_its_reason_with_the_others_but_never_closes_the_gate() -> None:
    outage, budget = Fake("unreachable"), Fake("budget", DAILY, 100.0)  # the gate asks admit() per create
    holds = Holds([Fake("auth"), outage, budget])
    assert holds.hold(0.0) is None and holds.paused == DAILY
    assert holds.current() == [Paused("budget", DAILY, 100.0)]
    outage.paused, outage.since, outage.wait = OUTAGE, 50.0, 2.0
    assert holds.hold(0.0) == 2.0 and holds.paused == f"{OUTAGE}; {DAILY}"


def test_shd_process_never_takes_a_budget_hold_for_an_outage() -> None:
    """Exit 6 is for the credentials (at once) and the API (after the patience); a budget hold, however old, is
    not one of them (it ends `shd process` with exit 8 through the job's own `held`, once nothing is in flight)."""
    budget = Paused("budget", DAILY, 0.0)
    assert process.give_up([budget], 300.0, 1e9) is None
    assert process.give_up([budget, Paused("unreachable", OUTAGE, 0.0)], 300.0, 299.0) is None
    assert process.give_up([budget, Paused("unreachable", OUTAGE, 0.0)], 300.0, 300.0) == (
        f"{OUTAGE}; gave up after 300 s (replicate.unreachable_patience)")
    assert process.give_up([budget, Paused("auth", "the token was refused", 0.0)], 300.0, 0.0) == (
        "the token was refused")


def test_status_line_names_a_daily_cap_once_and_a_jobs_own_cap_after_the_count() -> None:
    assert summary_line(2, 61, 141, 0, None, []) == "2 job(s) active, 61/141 frames painted, 0 failed"
    assert summary_line(1, 3, 5, 0, DAILY, [DAILY]) == f"1 job(s) active, 3/5 frames painted, 0 failed; " \
                                                          f"PAUSED: {DAILY}; HELD: 1 job(s)"
    both = f"{OUTAGE}; {DAILY}"  # the holds' reasons joined: the daily cap is said once, in PAUSED
    assert summary_line(2, 3, 9, 1, both, [DAILY, DAILY]).endswith(f"PAUSED: {both}; HELD: 2 job(s)")
    own = "job budget $0.05 reached ($0.05 spent); raise budget.per_job_usd and reload"
    assert summary_line(1, 0, 4, 0, None, [own]).endswith(f"0 failed; HELD: 1 job(s): {own}")

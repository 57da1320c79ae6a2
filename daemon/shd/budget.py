"""PURE: the spending caps, the periods they count over, and what a create asked for at a given spend means.

`check(caps, ask, now, zone)` is asked before every paid create (scheduler/budget_gate.py keeps the figures). A
create goes ahead only if what is spent, plus what is in flight at its expected cost, plus its own expected cost
stays within every cap; otherwise the job is HELD (never failed): no new prediction starts, the ones in flight finish
and are counted, so a cap is overshot by at most what was in flight. Caps:

    per_job_usd    one job's spend; also holds a job whose estimate alone is over it, before its first paid call
    daily_usd      all jobs, since midnight in `budget.timezone` (UTC unless configured); resumes the next day
    monthly_usd    all jobs, since the first of the month; resumes the next month

A raise and a reload (SIGHUP) resume held work at once. `warnings` says which caps are 80% used.
No I/O and no clock: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from shd.pricing import usd

WARN_AT = 0.8


@dataclass(frozen=True)
class Caps:
    per_job_usd: float | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None

    @property
    def any(self) -> bool:
        return any(c is not None for c in (self.per_job_usd, self.daily_usd, self.monthly_usd))


@dataclass(frozen=True)
class Ask:
    """The figures a create is checked against (dollars)."""

    next_usd: float                  # the expected cost of the create asked for
    today: float                     # spent since the day began (all jobs)
    month: float                     # spent since the month began
    in_flight: float                 # predictions in flight, at their expected cost (all jobs)
    job_spent: float                 # spent by this job
    job_in_flight: float             # this job's predictions in flight, at their expected cost
    job_estimate: float | None = None   # what this whole job is expected to cost
    job_frames: int | None = None       # the frames that estimate is for


@dataclass(frozen=True)
class Hold:
    """No create now: `why` (for status, STATUS= and the log); `cap` names the cap; `until`: when its period ends
    (epoch seconds), None when only a raise lifts it."""

    why: str
    cap: str
    until: float | None


def zone(name: str) -> tzinfo:
    """The time zone days and months are counted in ('UTC' needs no time zone database)."""
    return timezone.utc if name == "UTC" else ZoneInfo(name)


def day_start(now: float, tz: tzinfo) -> float:
    local = datetime.fromtimestamp(now, tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(now: float, tz: tzinfo) -> float:
    local = datetime.fromtimestamp(now, tz)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def next_day(now: float, tz: tzinfo) -> float:
    local = datetime.fromtimestamp(now, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    return (local + timedelta(days=1)).timestamp()  # wall-clock arithmetic: midnight, whatever DST did


def next_month(now: float, tz: tzinfo) -> float:
    local = datetime.fromtimestamp(now, tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return local.replace(year=year, month=month).timestamp()


def check(caps: Caps, ask: Ask, now: float, tz: tzinfo, tz_name: str = "UTC") -> Hold | None:
    """None if the create may go ahead; else the Hold that says why not (the first cap it would pass)."""
    if caps.per_job_usd is not None:
        if ask.job_estimate is not None and ask.job_estimate > caps.per_job_usd:
            frames = f" for {ask.job_frames} frames" if ask.job_frames is not None else ""
            return Hold(f"job estimated at {usd(ask.job_estimate)}{frames}, over budget.per_job_usd "
                        f"{usd(caps.per_job_usd)}; raise budget.per_job_usd and reload", "per_job", None)
        if ask.job_spent + ask.job_in_flight + ask.next_usd > caps.per_job_usd:
            return Hold(f"job budget {usd(caps.per_job_usd)} reached ({usd(ask.job_spent)} spent); "
                        f"raise budget.per_job_usd and reload", "per_job", None)
    pending = ask.in_flight + ask.next_usd
    if caps.daily_usd is not None and ask.today + pending > caps.daily_usd:
        return Hold(f"daily budget {usd(caps.daily_usd)} reached; resumes at 00:00 {tz_name}, "
                    f"or raise budget.daily_usd and reload", "daily", next_day(now, tz))
    if caps.monthly_usd is not None and ask.month + pending > caps.monthly_usd:
        until = next_month(now, tz)
        day = datetime.fromtimestamp(until, tz).strftime("%Y-%m-%d")
        return Hold(f"monthly budget {usd(caps.monthly_usd)} reached; resumes on {day} 00:00 {tz_name}, "
                    f"or raise budget.monthly_usd and reload", "monthly", until)
    return None


def warnings(caps: Caps, ask: Ask) -> list[tuple[str, float, float]]:
    """The caps at least WARN_AT used once this create is counted: (cap, dollars counted, the cap)."""
    counted = {"per_job": ask.job_spent + ask.job_in_flight + ask.next_usd,
               "daily": ask.today + ask.in_flight + ask.next_usd,
               "monthly": ask.month + ask.in_flight + ask.next_usd}
    limits = {"per_job": caps.per_job_usd, "daily": caps.daily_usd, "monthly": caps.monthly_usd}
    return [(name, counted[name], cap) for name, cap in limits.items()
            if cap is not None and counted[name] >= WARN_AT * cap]

"""The budget check before every paid create, retries included (the arithmetic is budget.py's; this keeps the figures).

The stage runner asks `admit` just before it sends a create, for every stage alike. `admit` counts:
- what is spent: today's and this month's totals from the ledger (read once per period, then kept up to date by
  `spent`, which the paid calls report each finished prediction's cost to) and each job's own;
- what is in flight: every prediction created and not yet finished, at its expected cost (the price times the
  model's typical predict_time: the ledger's median, else the configured default), those an earlier run left
  in the ledger included;
- the create asked for, at its expected cost.
Within every cap, the create is counted as in flight until `release`. Past a cap it raises `Held`: nothing is
recorded or sent, the job's `held` column says why (status, STATUS=), the reason is logged loudly once, and the task
waits until the cap's period ends (at most `HOLD_RECHECK` s between looks); `reload` (SIGHUP) looks again at once.
An 80% warning is logged once per cap and period.

It is also one of the engine's holds (holds.py, kind "budget"): while a daily or monthly cap holds every job, its
reason joins the others' (status, STATUS=, the web page, the `daemon.paused` hook). It never closes the
dispatcher's gate: a task that resumes a prediction already paid for, or reuses a result, goes on; only a create
is held, here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from shd import budget, estimate, logs, pricing
from shd.config import Config
from shd.store import Job, Prediction, Store

TaskKey = tuple[str, int, str]
HOLD_RECHECK = 60.0     # seconds between looks at a held task's cap (a reload looks at once)
TYPICAL_REFRESH = 100   # finished predictions between refreshes of the typical predict_times
KIND = "budget"         # its kind among the engine's holds (holds.py)


class Held(Exception):
    """Raised by `admit` when the create would pass a cap: the task waits `retry_in` seconds (or for a reload)."""

    def __init__(self, hold: budget.Hold, retry_in: float):
        self.hold = hold
        self.retry_in = retry_in
        super().__init__(hold.why)


class BudgetGate:
    """Thread-safe; one per engine. Its lock is taken before the store's, never inside it: `spent`, which is called
    inside the store's transactions, only queues the cost for the next check."""

    kind = KIND

    def __init__(self, store: Store, settings: Callable[[], Config], expedite: Callable[[Iterable[TaskKey]], None],
                 wall: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        self.expedite = expedite
        self.wall = wall
        self.log = logs.get()
        self._lock = threading.Lock()
        self._typical: dict[str, float] = {}
        self._costs: deque[tuple[TaskKey, float]] = deque()   # reported by `spent`, counted at the next check
        self._finished = 0
        self._period: tuple[float, float] | None = None   # (day start, month start) the totals below count from
        self._today = self._month = 0.0
        self._jobs: dict[str, float] = {}                  # job id -> dollars spent
        self._reserved: dict[TaskKey, tuple[str, float]] = {
            (p.job_id, p.frame_idx, p.stage): (p.job_id, self.expected(p.model)) for p in store.predictions(live=True)}
        self._held: set[TaskKey] = set()
        self._job_holds: dict[str, str] = {}               # job id -> why it is held (as recorded in the store)
        self._pause: budget.Hold | None = None             # the daily or monthly cap that holds every job
        self._pause_since: float | None = None             # when that began (epoch seconds)
        self._said: set[tuple[str, str, object]] = set()   # (what, cap, period or job) logged once

    def expected(self, ref: str) -> float:
        """What one prediction of `ref` is expected to cost: its price x its typical predict_time (estimate.py)."""
        cfg = self.settings()
        price = pricing.price_for(cfg.prices, ref) or pricing.Price()
        if ref not in self._typical:
            self._typical[ref] = estimate.typical(cfg, ref, self.store)[0]
        return pricing.cost(price, self._typical[ref], 1 if price.per_output else 0)

    @property
    def paused(self) -> str | None:
        """Why no job may start a prediction now (the daily or monthly cap was reached), or None."""
        pause = self._pause
        return pause.why if pause is not None and (pause.until is None or self.wall() < pause.until) else None

    @property
    def since(self) -> float | None:
        """When the daily or monthly cap began to hold every job (epoch seconds), or None."""
        return self._pause_since if self.paused is not None else None

    def hold(self, now: float) -> float | None:
        """As a dispatcher gate (holds.py): never closed. Each create is checked by `admit` instead."""
        return None

    # --- the check ----------------------------------------------------------------------------------------------
    def admit(self, job: Job, task: TaskKey, ref: str) -> None:
        """Let one create of `ref` for `job` go ahead (counted in flight until `release`), or raise Held."""
        with self._lock:  # the settings too: a reload that lands meanwhile must not hold this task unseen
            self._count_costs()
            b = self.settings().budget
            next_usd = self.expected(ref)
            if b.caps.any:
                now, tz = self.wall(), budget.zone(b.timezone)
                ask = self._ask(job, task, next_usd, now, tz)
                hold = budget.check(b.caps, ask, now, tz, b.timezone)
                if hold is not None:
                    self._hold(job, task, hold, ask)
                    until = HOLD_RECHECK if hold.until is None else hold.until - now + 0.5
                    raise Held(hold, min(HOLD_RECHECK, max(0.5, until)))
                self._warn(b.caps, ask, job.id)
            self._held.discard(task)
            self._pause = None
            self._reserved[task] = (job.id, next_usd)
            if self._job_holds.pop(job.id, None) is not None or job.held:
                self.store.set_held(job.id, None)
                self.log.info("budget_resumed", job=job.id)

    def _ask(self, job: Job, task: TaskKey, next_usd: float, now: float, tz: Any) -> budget.Ask:
        period = (budget.day_start(now, tz), budget.month_start(now, tz))
        if period != self._period:
            self._period = period
            self._today, self._month = self.store.spent_since(period[0]), self.store.spent_since(period[1])
        if job.id not in self._jobs:
            self._jobs[job.id] = self.store.job_cost(job.id)["usd"]
        others = [(j, usd) for k, (j, usd) in self._reserved.items() if k != task]
        frames = job.frames_total or (round(job.duration * job.fps) if job.duration else None)
        return budget.Ask(next_usd=next_usd, today=self._today, month=self._month,
                          in_flight=sum(usd for _, usd in others), job_spent=self._jobs[job.id],
                          job_in_flight=sum(usd for j, usd in others if j == job.id),
                          job_estimate=job.estimate_usd, job_frames=frames)

    def _hold(self, job: Job, task: TaskKey, hold: budget.Hold, ask: budget.Ask) -> None:
        self._held.add(task)
        if hold.cap != "per_job":
            if self._pause is None or self._pause.cap != hold.cap:
                self._pause_since = self.wall()
            self._pause = hold
        self._job_holds[job.id] = hold.why
        if job.held != hold.why:  # as the task read it: a job that ended or was retried meanwhile says it again
            self.store.set_held(job.id, hold.why)
        once = ("held", hold.cap, job.id if hold.cap == "per_job" else self._period)
        if once not in self._said:
            self._said.add(once)
            self.log.error("budget_reached", reason=hold.why, job=job.id, spent_today=round(ask.today, 4),
                           spent_month=round(ask.month, 4), job_spent=round(ask.job_spent, 4),
                           in_flight=round(ask.in_flight, 4))

    def _warn(self, caps: budget.Caps, ask: budget.Ask, job_id: str) -> None:
        for cap, counted, limit in budget.warnings(caps, ask):
            once = ("warned", cap, job_id if cap == "per_job" else self._period)
            if once not in self._said:
                self._said.add(once)
                what = {"per_job": "job", "daily": "daily", "monthly": "monthly"}[cap]
                self.log.warning("budget_warning", job=job_id, cap=cap,
                                 message=f"{what} budget {round(100 * counted / limit)}% used: "
                                         f"{pricing.usd(counted)} of {pricing.usd(limit)} (spent and in flight)")

    # --- what the runner and the paid calls report --------------------------------------------------------------
    def track(self, task: TaskKey, job_id: str, ref: str) -> None:
        """A prediction an earlier try created is being resumed: it counts as in flight (no check: it is paid)."""
        usd = self.expected(ref)
        with self._lock:
            self._reserved[task] = (job_id, usd)

    def release(self, task: TaskKey) -> None:
        """The task is done with its prediction (finished and its cost reported, or given up)."""
        with self._lock:
            self._reserved.pop(task, None)

    def spent(self, pred: Prediction, usd: float) -> None:
        """A prediction finished and cost `usd` (recorded in the ledger): spent now, no longer in flight."""
        self._costs.append(((pred.job_id, pred.frame_idx, pred.stage), usd))

    def _count_costs(self) -> None:
        """Move the reported costs from in flight to spent (under the lock)."""
        while self._costs:
            (job_id, idx, stage), usd = self._costs.popleft()
            self._reserved.pop((job_id, idx, stage), None)
            self._today += usd
            self._month += usd
            if job_id in self._jobs:
                self._jobs[job_id] += usd
            self._finished += 1
            if self._finished % TYPICAL_REFRESH == 0:
                self._typical.clear()

    def reload(self) -> None:
        """The config changed (a raise, another time zone): count afresh and look at every held task now."""
        with self._lock:
            self._typical.clear()
            self._period = None
            self._said = {s for s in self._said if s[0] == "warned"}
            held, self._held = self._held, set()
        self.expedite(held)

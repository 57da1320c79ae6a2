"""What the web page and /metrics know about the running daemon beyond the store: whether it is paused and why,
the predictions in flight, the work waiting for a slot, the files in the inbox, and the two actions (retry,
cancel). `DaemonView` is that narrow interface; `AppView` implements it over the daemon's App, so the engine's
internals stay out of the web code.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shd import jobs, status
from shd.app import App
from shd.states import UNFINISHED_JOBS
from shd.watcher import is_ignored


@dataclass(frozen=True)
class InboxFile:
    name: str
    size: int
    age: float  # seconds since it last changed: it becomes a job once it holds still for watch.stable_seconds


def inbox_files(inbox: Path, now: float | None = None) -> list[InboxFile]:
    """The files waiting in the inbox (not yet claimed: a claimed file is moved out at once), by name. Hidden and
    temporary names are left out, as the watcher leaves them; a missing inbox is an empty list."""
    now = time.time() if now is None else now
    found = []
    try:
        entries = list(os.scandir(inbox))
    except OSError:
        return []
    for e in entries:
        if is_ignored(e.name):
            continue
        try:
            st = e.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append(InboxFile(e.name, st.st_size, max(0.0, round(now - st.st_mtime, 1))))
    return sorted(found, key=lambda f: f.name)


class DaemonView(Protocol):
    """The running daemon, as the web page and /metrics see it. Every method is quick and thread-safe."""

    def paused(self) -> str | None:
        """Why no predictions are being created (token, budget, API unreachable), or None."""

    def in_flight(self) -> int:
        """Predictions holding a slot now."""

    def queue_length(self) -> int:
        """Paid stages queued (or waiting to be retried) that do not hold a slot yet."""

    def inbox(self) -> list[InboxFile]:
        """Files in the inbox not yet claimed."""

    def spend(self) -> Mapping[str, float] | None:
        """Spend so far from the ledger ({"today_usd", "month_usd", "total_usd"}); None leaves it out of the page
        and /metrics."""

    def retry(self, job_id: str) -> str:
        """`shd retry` for one job; returns what happened in one line; raises ShdError if it cannot."""

    def cancel(self, job_id: str) -> str:
        """`shd cancel` for one job; returns what happened in one line; raises ShdError if it cannot."""


class AppView:
    """DaemonView over the daemon's App (its engine, store and Replicate client)."""

    def __init__(self, app: App):
        self.app = app

    def paused(self) -> str | None:
        return self.app.engine.paused

    def in_flight(self) -> int:
        return self.app.engine.in_flight()

    def queue_length(self) -> int:
        held = sum(self.app.engine.queued(j.id) for j in self.app.store.jobs(tuple(UNFINISHED_JOBS)))
        return max(0, held - self.in_flight())

    def inbox(self) -> list[InboxFile]:
        return inbox_files(self.app.cfg.paths.inbox)

    def spend(self) -> Mapping[str, float] | None:
        return status.spend(self.app.store, self.app.cfg.budget.timezone)

    def retry(self, job_id: str) -> str:
        job = jobs.retry(self.app.cfg, self.app.store, job_id)
        return f"job {job.id} is {job.state}; its failed frames start again"

    def cancel(self, job_id: str) -> str:
        try:
            job, n = jobs.cancel(self.app.store, self.app.backend.remote, job_id,
                               prices=self.app.cfg.prices)
        except jobs.CancelUnfinished:
            self.app.engine.drop_job(job_id)  # canceled all the same: its message says what runs on
            raise
        self.app.engine.drop_job(job.id)
        return f"job {job.id} canceled; {n} remote prediction(s) canceled"

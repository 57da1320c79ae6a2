"""The daemon's job threads: up to `pipeline.max_jobs` at once, oldest job first (resumed jobs included); a job
whose last run was deferred (a full disk, a database error) is tried again DEFER_RETRY s later."""

from __future__ import annotations

import threading
import time

from shd.app import App
from shd.pipeline import start_job_thread
from shd.states import UNFINISHED_JOBS

DEFER_RETRY = 30.0   # seconds before a job stopped by a disk-full or database error is tried again


class JobThreads:
    def __init__(self) -> None:
        self.threads: dict[str, threading.Thread] = {}
        self._cooldown: dict[str, float] = {}  # job id -> when a deferred job may be tried again

    def schedule(self, app: App, max_jobs: int) -> None:
        """Forget the threads that ended, then start one for each unfinished job, up to `max_jobs` in all (a job held
        by its own cap not counted)."""
        now = time.monotonic()
        for job_id, t in list(self.threads.items()):
            if not t.is_alive():
                del self.threads[job_id]
                if job_id in app.runner.deferred:
                    self._cooldown[job_id] = now + DEFER_RETRY
        unfinished = app.store.jobs(tuple(UNFINISHED_JOBS))
        # A job its own cap (budget.per_job_usd) holds keeps its thread but not its slot: the jobs behind it go on.
        # A daily or monthly cap is the pause's (it holds every job): those jobs keep their slots.
        paused = app.engine.paused or ""
        own_held = {j.id for j in unfinished if j.held and j.held not in paused}
        free = max_jobs - len(self.threads.keys() - own_held)
        if free <= 0:
            return
        for job in unfinished:
            if free <= 0:
                break
            if job.id in self.threads or (job.mode == "daemon" and not job.source_path):
                continue
            if self._cooldown.get(job.id, 0.0) > now:
                continue
            self.threads[job.id] = start_job_thread(app.runner, job.id)
            free -= 1

    def join(self, deadline: float) -> None:
        """Wait for every job thread, until `deadline` (time.monotonic) at the latest."""
        for t in self.threads.values():
            t.join(max(0.0, deadline - time.monotonic()))

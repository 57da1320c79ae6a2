"""The jobs table: a job created, found, updated, moved through its states (checked by shd.states and logged), and
held while a budget cap stops its new predictions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shd import states
from shd.errors import StoreError, UsageError
from shd.states import JobState
from shd.store.connection import Connection
from shd.store.rows import Job, _row


class Jobs(Connection):
    """A job per video: its row and its state."""

    def create_job(self, job_id: str, *, source_name: str, origin_path: Path, source_path: Path | None,
                   work_dir: Path, mode: str, fps: float, output_target: Path | None = None,
                   overwrite: bool = False, source_sha256: str | None = None,
                   settings_sha256: str | None = None) -> Job:
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO jobs (id, source_name, origin_path, source_path, work_dir, mode, output_target,"
                " overwrite, state, fps, created_at, updated_at, source_sha256, settings_sha256)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, source_name, str(origin_path), str(source_path) if source_path else None, str(work_dir),
                 mode, str(output_target) if output_target else None, int(overwrite), fps, now, now,
                 source_sha256, settings_sha256),
            )
            self._event(job_id, "job", None, JobState.QUEUED, detail=source_name)
        return self.job(job_id)

    def job(self, job_id: str) -> Job:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise StoreError(f"no job {job_id}")
        return _row(Job, row)

    def find_job(self, ref: str) -> Job:
        """A job by id or unique id prefix; UsageError (exit 2) if none or several match."""
        rows = self._all("SELECT * FROM jobs WHERE id LIKE ? ORDER BY created_at", (ref.replace("%", "") + "%",))
        if len(rows) == 1:
            return _row(Job, rows[0])
        if not rows:
            raise UsageError(f"no job matches {ref!r}")
        raise UsageError(f"{ref!r} matches {len(rows)} jobs; give more of the id")

    def jobs(self, states_: tuple[str, ...] | None = None) -> list[Job]:
        if states_:
            marks = ",".join("?" * len(states_))
            rows = self._all(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at", states_)
        else:
            rows = self._all("SELECT * FROM jobs ORDER BY created_at")
        return [_row(Job, r) for r in rows]

    def unfinished_job_of(self, mode: str, source_sha256: str, settings_sha256: str) -> Job | None:
        """The oldest unfinished job of `mode` that is the work of this source content with these settings."""
        row = self._one("SELECT * FROM jobs WHERE mode = ? AND source_sha256 = ? AND settings_sha256 = ?"
                        " AND state IN ('queued', 'extracting', 'running', 'stitching') ORDER BY created_at LIMIT 1",
                        (mode, source_sha256, settings_sha256))
        return _row(Job, row) if row else None

    def update_job(self, job_id: str, **values: Any) -> None:
        """Set plain (non-state) columns of a job: source_path, duration, width, height, has_audio, frames_total,
        output, output_target and overwrite (a resumed `shd process` job), error (where its file is now),
        estimate_usd, estimate_seconds."""
        allowed = {"source_path", "duration", "width", "height", "has_audio", "frames_total", "output",
                   "output_target", "overwrite", "error", "estimate_usd", "estimate_seconds"}
        if not values or not set(values) <= allowed:
            raise StoreError(f"update_job: cannot set {sorted(set(values) - allowed)}")
        cols = ", ".join(f"{k} = :{k}" for k in values)
        with self.tx() as db:
            db.execute(f"UPDATE jobs SET {cols}, updated_at = :now WHERE id = :id",
                       {**{k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()},
                        "now": time.time(), "id": job_id})

    def transition_job(self, job_id: str, target: JobState, *, error: str | None = None,
                       output: str | None = None, expect: tuple[JobState, ...] | None = None,
                       exit_code: int | None = None) -> Job:
        """Move a job to `target` (checked by shd.states); `expect` additionally requires a current state.
        `exit_code`: for a failure, the exit code `shd process` reports for it (cleared by any other move)."""
        with self.tx() as db:
            job = self.job(job_id)
            if expect is not None and job.state not in expect:
                raise StoreError(f"job {job_id} is {job.state}, not {'/'.join(expect)}")
            states.check_job(job_id, job.state, target)
            now = time.time()
            finished = now if target in (JobState.DONE, JobState.FAILED, JobState.CANCELED) else None
            # A retried job (-> queued, or a done one -> running) starts afresh: its elapsed time and its retry
            # budgets count from now on.
            started = None if target == JobState.QUEUED else now if job.state == JobState.DONE else (
                job.started_at or (now if target == JobState.EXTRACTING else None))
            # A budget hold belongs to a job whose frames are being paid for: one that goes on to stitching, ends,
            # or starts again (shd retry) is held no more until a cap is checked for it again (budget_gate.py).
            paying = (JobState.EXTRACTING, JobState.RUNNING)
            keeps_hold = target in paying and job.state in paying
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, output = COALESCE(?, output), updated_at = ?,"
                " started_at = ?, finished_at = ?, exit_code = ?, held = CASE WHEN ? THEN held END WHERE id = ?",
                (target, error, output, now, started, finished, exit_code, keeps_hold, job_id),
            )
            self._event(job_id, "job", job.state, target, detail=error)
        return self.job(job_id)

    def set_held(self, job_id: str, why: str | None) -> None:
        """Record why no new prediction of the job starts (a budget cap), or that it goes on again (None)."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET held = ?, updated_at = ? WHERE id = ?", (why, time.time(), job_id))
            self._event(job_id, "budget", None, "held" if why else "resumed", detail=why)

    def clear_held(self) -> None:
        """Forget every job's hold (a starting engine checks the budget afresh before its next create)."""
        with self.tx() as db:
            db.execute("UPDATE jobs SET held = NULL WHERE held IS NOT NULL")

    # --- read-only queries for the web page and /metrics --------------------------------------------------------
    def finished_jobs(self, limit: int) -> list[Job]:
        """The `limit` most recently finished jobs (done, failed, canceled), newest first."""
        rows = self._all("SELECT * FROM jobs WHERE state IN ('done', 'failed', 'canceled')"
                         " ORDER BY finished_at DESC, created_at DESC LIMIT ?", (limit,))
        return [_row(Job, r) for r in rows]

"""The runner: one job sequenced through its states (queued -> extracting -> running -> stitching -> done), each
step in a module of its own (extraction.py, painting.py, assembly.py, publishing.py), and what stops it short:
failed (the video's fault, with its reason), deferred (a full disk, a database error: tried again later), or
interrupted (the engine stops; resumed at the next start).

`run_job()` is idempotent and resumable: called again after a crash at any point it carries on from the state the
store recorded (already-recorded frames are not extracted twice). It first stops any ffmpeg an earlier, killed
run left working in the job folder (`children.stop_leftovers`). A job canceled while it stitches publishes nothing.
A full disk defers the job (`deferred`: tried again later), whichever write ran out of space.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shd import children, diskfull, identity, logs, testpoints
from shd.config import Config
from shd.errors import DiskError, DiskFull, IllegalTransition, InputError, MediaError, ShdError, StoreError
from shd.fill import FillRefused
from shd.pipeline import assembly, extraction, painting, publishing
from shd.pipeline.context import JobContext, JobInterrupted, JobLeft
from shd.scheduler import Engine
from shd.states import JobState
from shd.store import Job, Store


class JobRunner(JobContext):
    """Drives jobs to done/failed. `run_job(job_id)` blocks until the job is finished or the engine stops."""

    def __init__(self, cfg: Config, store: Store, engine: Engine, ffmpeg: str,
                 on_finished: Callable[[Job], None] | None = None):
        super().__init__(cfg, store, engine, ffmpeg)
        self.on_finished = on_finished
        self.deferred: dict[str, ShdError] = {}  # job id -> why its last run stopped short (disk full, database...)
        self._sources_checked: dict[str, tuple[str, int, int]] = {}  # see _same_source

    def run_job(self, job_id: str) -> Job:
        self.engine.work_on(job_id)  # its predictions in flight are resumed here: waited for (scheduler/reuse.py)
        try:
            return self._run_job(job_id)
        finally:
            self.engine.done_with(job_id)

    def _run_job(self, job_id: str) -> Job:
        job = self.store.job(job_id)
        log = logs.get(job=job_id, source=job.source_name)
        self.deferred.pop(job_id, None)
        try:
            if Path(job.work_dir).is_dir():
                for pid in children.stop_leftovers(Path(job.work_dir)):
                    log.warning("leftover_ffmpeg_stopped", pid=pid)
            if job.state != JobState.QUEUED:
                _same_source(job, self._sources_checked)
            if job.state == JobState.QUEUED:
                job = self.store.transition_job(job_id, JobState.EXTRACTING)
                log.info("job_started")
            if job.state == JobState.EXTRACTING:
                extraction.extract(self, job, log)
                job = self.store.transition_job(job_id, JobState.RUNNING)
            if job.state == JobState.RUNNING:
                painting.wait_for_frames(self, job)
                publishing.discard_staged(job)  # staged by an earlier run, of the frames as they were then
                job = self.store.transition_job(job_id, JobState.STITCHING)
            if job.state == JobState.STITCHING:
                staged = assembly.stitch(self, job, log)
                if self.gone(job_id):  # canceled while it stitched: nothing of it is published
                    raise JobInterrupted
                out, fresh = publishing.publish_staged(self, job, staged)
                try:
                    job = self.store.transition_job(job_id, JobState.DONE, output=str(out))
                except IllegalTransition:
                    if not self.gone(job_id):
                        raise
                    if fresh is not None:  # canceled the very moment it was published: taken back
                        publishing.withdraw(job, staged, fresh)
                    raise JobInterrupted from None
                testpoints.reached("done-recorded")
                shutil.rmtree(Path(job.work_dir) / "publish", ignore_errors=True)
                log.info("job_done", output=str(out))
        except JobInterrupted:
            log.info("job_interrupted", state=self.store.job(job_id).state)
            return self.store.job(job_id)
        except JobLeft as e:
            return self._defer(job_id, e.why, log)
        except DiskError as e:
            return self._defer(job_id, e, log)
        except MediaError as e:
            if self.engine.stopping:  # ffmpeg was stopped because the daemon is: resume at the next start
                log.info("job_interrupted", state=self.store.job(job_id).state)
                return self.store.job(job_id)
            job = self._fail(job_id, str(e), log, e.exit_code)
        except InputError as e:
            job = self._fail(job_id, str(e), log, e.exit_code)
        except FillRefused as e:
            job = self._fail(job_id, f"{job.source_name}: {e}", log)
        except (StoreError, OSError) as e:
            # Disk full, database locked or broken: not the video's fault. Loud, and tried again later.
            if isinstance(e, StoreError):
                return self._defer(job_id, e, log)
            if diskfull.is_full(e):
                return self._defer(job_id, DiskFull(e.filename or job.work_dir), log)
            return self._defer(job_id, DiskError(f"{type(e).__name__}: {e}"), log)
        except ShdError as e:
            if self.engine.stopping:
                return self.store.job(job_id)
            job = self._fail(job_id, str(e), log, e.exit_code)
        if job.state in (JobState.DONE, JobState.FAILED) and self.on_finished:
            self.on_finished(job)
        return job

    def _defer(self, job_id: str, why: ShdError, log: Any) -> Job:
        log.error("job_deferred_will_retry", reason=str(why))
        self.deferred[job_id] = why
        return self.store.job(job_id)

    def _fail(self, job_id: str, reason: str, log: Any, exit_code: int = 1) -> Job:
        log.error("job_failed", reason=reason)
        self.engine.drop_job(job_id)
        job = self.store.job(job_id)
        if job.state in (JobState.FAILED, JobState.CANCELED, JobState.DONE):
            return job
        return self.store.transition_job(job_id, JobState.FAILED, error=reason, exit_code=exit_code)


def _same_source(job: Job, checked: dict[str, tuple[str, int, int]]) -> None:
    """InputError if the video of a `shd process` job that is resumed (it stays where the user keeps it) is no longer
    the one the job started from: its frames and paid work are of the earlier content, and the rest (frames still to
    extract, the soundtrack) would come from the new one. A file that cannot be read is said by the step reading it.
    `checked` (job id -> path, size, mtime of the file found the same) spares hashing it again on every run of the
    job in this process (a deferred job is run again every 30 s) while the file is untouched."""
    if job.mode != "process" or job.source_sha256 is None or job.source_path is None:
        return
    try:
        st = os.stat(job.source_path)
        seen = (job.source_path, st.st_size, st.st_mtime_ns)
        if checked.get(job.id) == seen:
            return
        digest = identity.file_digest(Path(job.source_path))
    except OSError:
        return
    if digest != job.source_sha256:
        raise InputError(job.source_path, "changed since its job started (its frames and what was paid for are of "
                                          "the earlier content); `shd process` on it starts a new job, reusing what "
                                          "matches")
    checked[job.id] = seen


def start_job_thread(runner: JobRunner, job_id: str, done: threading.Event | None = None) -> threading.Thread:
    """Run one job in a daemon thread (the service keeps up to pipeline.max_jobs of these)."""

    runner.engine.work_on(job_id)  # at work from now, not from when the thread gets going (scheduler/reuse.py)

    def target() -> None:
        try:
            runner.run_job(job_id)
        except ShdError as e:  # e.g. the database failed while a failure was being recorded: said, not a crash
            logs.get(job=job_id).error("job_stopped", error=str(e))
        except Exception:  # noqa: BLE001 - a job thread must never take the daemon down
            logs.get(job=job_id).exception("job_thread_crashed")
        finally:
            runner.engine.done_with(job_id)
            if done is not None:
                done.set()

    t = threading.Thread(target=target, name=f"shd-job-{job_id}", daemon=True)
    t.start()
    return t

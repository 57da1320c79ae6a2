"""Jobs as files: claiming a video from the inbox, moving a bad one aside with its reason, retry and cancel.

Claiming is crash-safe and never takes a file twice: the job row is written first (origin = the inbox path), then
the file is renamed atomically into the job's folder, then the row records the new place. A restart that finds a
job whose file is still in the inbox finishes the move (`finish_claims`); a file that is no longer in the inbox is
never looked at again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shd import logs
from shd.backends.base import Remote
from shd.config import Config
from shd.errors import BackendError, StoreError
from shd.states import FrameState, JobState, retry_state
from shd.store import Job, Store


def _move(src: Path, dest: Path) -> None:
    """Atomic rename; across filesystems, copy to a temp name beside `dest`, fsync, rename, then unlink `src`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dest)
    except OSError as e:
        if e.errno != 18:  # EXDEV
            raise
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(src, tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        src.unlink()


def claim(cfg: Config, store: Store, path: Path, job_id: str) -> Job:
    """Make a job of an inbox file and move the file into the job's folder (raises OSError if it vanished)."""
    # A claim whose move failed earlier (disk full, say) left its job waiting for the file: finish that one
    # rather than make a second job of the same file.
    waiting = [j for j in store.jobs(("queued",))
               if j.mode == "daemon" and not j.source_path and j.origin_path == str(path)]
    if waiting:
        job_id = waiting[0].id
    else:
        store.create_job(job_id, source_name=path.name, origin_path=path, source_path=None,
                         work_dir=cfg.paths.jobs_dir / job_id, mode="daemon", fps=cfg.pipeline.fps)
    try:
        return _finish_claim(store, store.job(job_id))
    except FileNotFoundError:
        store.transition_job(job_id, JobState.FAILED, error=f"{path}: vanished before it could be claimed")
        raise


def _finish_claim(store: Store, job: Job) -> Job:
    origin = Path(job.origin_path)
    dest = Path(job.work_dir) / origin.name  # the user's own name, so every error names their file
    if not dest.exists():
        _move(origin, dest)
    store.update_job(job.id, source_path=dest)
    return store.job(job.id)


def finish_claims(store: Store) -> list[str]:
    """After a crash: complete claims that recorded a job but not the move. Returns the ids of jobs whose file is
    gone from both places (they fail with that reason)."""
    lost: list[str] = []
    for job in store.jobs(("queued",)):
        if job.mode != "daemon" or job.source_path:
            continue
        try:
            _finish_claim(store, job)
        except FileNotFoundError:
            store.transition_job(job.id, JobState.FAILED, error=f"{job.origin_path}: vanished while being claimed")
            lost.append(job.id)
    return lost


def move_aside(cfg: Config, store: Store, job: Job) -> Path | None:
    """A failed daemon job's source goes to state_dir/failed/<name>, with <name>.error.txt holding the reason."""
    if job.mode != "daemon" or not job.source_path:
        return None
    src = Path(job.source_path)
    failed = cfg.paths.failed_dir
    failed.mkdir(parents=True, exist_ok=True)
    dest = failed / job.source_name
    if dest.exists() and dest != src:
        dest = failed / f"{Path(job.source_name).stem}.{job.id}{Path(job.source_name).suffix}"
    if src.exists():
        _move(src, dest)
    store.update_job(job.id, source_path=dest)
    note = dest.with_name(dest.name + ".error.txt")
    note.write_text(f"{job.error or 'failed'}\njob: {job.id}\nsource: {job.origin_path}\n", encoding="utf-8")
    return dest


def retry(cfg: Config, store: Store, ref: str) -> Job:
    """`shd retry JOB`: failed frames start again, and a failed or canceled job goes back to the queue."""
    job = store.find_job(ref)
    if job.state == JobState.DONE:
        raise StoreError(f"job {job.id} is done; nothing to retry")
    with store.tx():
        for f in store.frames(job.id, (FrameState.FAILED,)):
            store.transition_frame(job.id, f.idx, retry_state(f.prompt is not None))
        if job.state in (JobState.FAILED, JobState.CANCELED):
            if job.mode == "daemon" and job.source_path and Path(job.source_path).parent == cfg.paths.failed_dir:
                back = Path(job.work_dir) / job.source_name
                _move(Path(job.source_path), back)
                Path(job.source_path + ".error.txt").unlink(missing_ok=True)
                store.update_job(job.id, source_path=back)
            store.transition_job(job.id, JobState.QUEUED)
    return store.job(job.id)


def cancel(store: Store, remote: Remote | None, ref: str) -> tuple[Job, int]:
    """`shd cancel JOB`: the job is canceled and its live remote predictions are canceled on the server.
    Returns the job and how many predictions were canceled remotely."""
    job = store.find_job(ref)
    if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELED):
        raise StoreError(f"job {job.id} is already {job.state}")
    job = store.transition_job(job.id, JobState.CANCELED, error="canceled by the user")
    n = 0
    for p in store.predictions(job.id, live=True):
        if p.remote_id and remote is not None:
            try:
                remote.cancel(p.remote_id)
                n += 1
            except BackendError as e:
                logs.get(job=job.id).warning("cancel_failed", prediction_id=p.remote_id, error=str(e))
        store.update_prediction(p.id, status="canceled", error="canceled by the user")
    return job, n

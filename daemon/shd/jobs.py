"""Jobs as files: claiming a video from the inbox, moving a bad one aside with its reason, retry and cancel.

Claiming is crash-safe and never takes a file twice: the job row is written first (origin = the inbox path), then
the file is renamed atomically into the job's folder, then the row records the new place. A restart that finds a
job whose file is still in the inbox finishes the move (`finish_claims`); a file that is no longer in the inbox is
never looked at again. If the new place cannot be recorded (a full or damaged database), the file is moved back:
shd never holds a file it has no record of.

Only regular files are claimed, and a link is never followed: an entry that is not a regular file when the claim
looks at it (`os.lstat`) raises NotAFile and stays where it is; across file systems the copy opens the source with
O_NOFOLLOW and checks what it opened. An entry swapped for a link at the instant of the claim is moved as the link
itself and its job fails with "symbolic link, not followed" (then it goes to failed/, still a link).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from shd import logs, names, pricing
from shd.stability import why_not_regular
from shd.backends.base import Remote
from shd.config import Config
from shd.errors import BackendError, ShdError, UsageError
from shd.scheduler.paid_call import settle_cancel
from shd.states import FrameState, JobState, PairState, retry_state
from shd.store import Job, Store


ERROR_SUFFIX = ".error.txt"


class NotAFile(Exception):
    """Raised when an inbox entry is not a regular file (a link, folder, FIFO, socket, device); `reason` says what."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def _check_entry(path: Path) -> None:
    """NotAFile unless `path` itself (not what a link points to) is a regular file; FileNotFoundError if gone."""
    reason = why_not_regular(os.lstat(path).st_mode)
    if reason is not None:
        raise NotAFile(path, reason)


def _move(src: Path, dest: Path) -> None:
    """Atomic rename (a link is moved as the link); across file systems, copy the regular file `src` (never what a
    link points to: NotAFile) to a temp name beside `dest`, fsync, rename, then unlink `src`."""
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.rename(src, dest)
        return
    except OSError as e:
        if e.errno != 18:  # EXDEV
            raise
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == 40:  # ELOOP: src is a symbolic link
            raise NotAFile(src, "symbolic link, not followed") from None
        raise
    tmp = dest.with_name(f".shd-{secrets.token_hex(6)}.part")  # short: fits whatever the name's length
    try:
        with os.fdopen(fd, "rb") as fin:
            reason = why_not_regular(os.fstat(fin.fileno()).st_mode)
            if reason is not None:
                raise NotAFile(src, reason)
            with open(tmp, "xb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    src.unlink()


def claim(cfg: Config, store: Store, path: Path, job_id: str) -> Job:
    """Make a job of an inbox file and move the file into the job's folder. NotAFile (nothing recorded) for an
    entry that is not a regular file; OSError if it vanished."""
    _check_entry(path)
    # A claim whose move failed earlier (disk full, say) left its job waiting for the file: finish that one
    # rather than make a second job of the same file.
    waiting = [j for j in store.jobs(("queued",))
               if j.mode == "daemon" and not j.source_path and j.origin_path == names.storable(str(path))]
    if waiting:
        job_id = waiting[0].id
    else:
        store.create_job(job_id, source_name=names.storable(path.name), origin_path=Path(names.storable(str(path))),
                         source_path=None, work_dir=cfg.paths.jobs_dir / job_id, mode="daemon",
                         fps=cfg.pipeline.fps)
    try:
        return _finish_claim(store, store.job(job_id), path)
    except FileNotFoundError:
        store.transition_job(job_id, JobState.FAILED, error=f"{path}: vanished before it could be claimed")
        raise
    except NotAFile as e:
        store.transition_job(job_id, JobState.FAILED, error=f"{path}: {e.reason}")
        raise


def _finish_claim(store: Store, job: Job, origin: Path | None = None) -> Job:
    origin = origin or Path(job.origin_path)
    dest = Path(job.work_dir) / job.source_name  # the user's own name, so every error names their file
    if not os.path.lexists(dest):
        _move(origin, dest)
    try:
        store.update_job(job.id, source_path=dest)
    except ShdError:
        _move(dest, origin)  # unrecorded, it must not stay ours: back to the inbox, to be claimed again
        raise
    job = store.job(job.id)
    reason = why_not_regular(os.lstat(dest).st_mode)
    if reason is not None:  # swapped for a link (or such) between our look and the rename: never read it
        return store.transition_job(job.id, JobState.FAILED, error=f"{origin}: {reason}")
    return job


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
        except NotAFile as e:
            store.transition_job(job.id, JobState.FAILED, error=f"{job.origin_path}: {e.reason}")
    return lost


def error_note(source: Path) -> Path:
    """Where the reason a file failed is written: `<name>.error.txt` beside it, the name shortened if need be."""
    return source.with_name(names.sidecar(source.name, ERROR_SUFFIX))


def move_aside(cfg: Config, store: Store, job: Job) -> Path | None:
    """A failed daemon job's source goes to state_dir/failed/<name>, with <name>.error.txt holding the reason
    (a link stays a link)."""
    if job.mode != "daemon" or not job.source_path:
        return None
    src = Path(job.source_path)
    failed = cfg.paths.failed_dir
    failed.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = failed / job.source_name
    if os.path.lexists(dest) and dest != src:
        suffix = Path(job.source_name).suffix
        dest = failed / names.fit(f"{Path(job.source_name).stem}.{job.id}", suffix)
    if os.path.lexists(src):
        os.rename(src, dest)  # the job folder and failed/ are both in the state directory
    error = (job.error or "failed").replace(str(src), str(dest))  # the reason names where the file is now
    store.update_job(job.id, source_path=dest, error=error)
    error_note(dest).write_text(f"{error}\njob: {job.id}\nsource: {job.origin_path}\n", encoding="utf-8")
    return dest


def retry(cfg: Config, store: Store, ref: str) -> Job:
    """`shd retry JOB`: failed frames (and FILM's failed pairs) start again, and a failed or canceled job goes back
    to the queue. A done job whose frames (or pairs) failed (their slots filled, their gaps crossfaded) goes back to
    painting (interpolating) them; its video is then stitched again and replaces the published one in place
    (pipeline/publishing.py). UsageError if a job that is not failed or canceled (done, or still at work) has no
    failed frame or pair."""
    job = store.find_job(ref)
    failed = store.frames(job.id, (FrameState.FAILED,))
    if job.state not in (JobState.FAILED, JobState.CANCELED) and not failed and not any(
            p.state == PairState.FAILED for p in store.pairs(job.id)):
        raise UsageError(f"job {job.id} is {job.state} and none of its frames failed; nothing to retry")
    with store.tx():
        store.retry_pairs(job.id)
        for f in failed:
            store.transition_frame(job.id, f.idx, retry_state(f.prompt is not None), filled_with=None)
        if job.state == JobState.DONE:
            store.transition_job(job.id, JobState.RUNNING)
        elif job.state in (JobState.FAILED, JobState.CANCELED):
            if job.mode == "daemon" and job.source_path and Path(job.source_path).parent == cfg.paths.failed_dir:
                back = Path(job.work_dir) / job.source_name
                os.rename(job.source_path, back)
                error_note(Path(job.source_path)).unlink(missing_ok=True)
                store.update_job(job.id, source_path=back)
            store.transition_job(job.id, JobState.QUEUED)
    return store.job(job.id)


def cancel(store: Store, remote: Remote | None, ref: str, *,
           prices: Mapping[str, pricing.Price] = pricing.DEFAULT_PRICES) -> tuple[Job, int]:
    """`shd cancel JOB`: the job is canceled and its live remote predictions are canceled on the server, each
    recorded as it ended there and priced at `prices` for the time it ran (paid_call.settle_cancel). A create whose
    id was never recorded (a daemon killed while it was in flight) is looked up by its input first. A create still
    in flight in a running daemon is canceled by its worker the moment it returns. Returns the job and how many
    predictions were canceled remotely. One that could not be canceled (or looked up) stays live in the ledger and
    raises CancelUnfinished once the others are done; the same call again (on the canceled job) finishes it."""
    job = store.find_job(ref)
    if job.state in (JobState.DONE, JobState.FAILED) or (
            job.state == JobState.CANCELED and (remote is None or not store.predictions(job.id, live=True))):
        raise UsageError(f"job {job.id} is already {job.state}")
    if job.state != JobState.CANCELED:
        job = store.transition_job(job.id, JobState.CANCELED, error="canceled by the user")
    log = logs.get(job=job.id)
    n = 0
    unfinished: list[str] = []
    for p in store.predictions(job.id, live=True):
        remote_id = p.remote_id
        if remote_id is None and remote is not None:
            try:
                found = remote.find(p.model, p.input, p.created_at)
                remote_id = found.remote_id if found is not None else None
            except BackendError as e:
                log.warning("cancel_lookup_failed", prediction=p.id, error=str(e))
                unfinished.append(str(e))
                continue
        if remote_id is not None and remote is not None:
            ended = settle_cancel(store, remote, p, remote_id, log, sleep=time.sleep, poll_interval=0.5,
                                  prices=prices)
            n += ended == "canceled"
            if ended is None:
                unfinished.append(str(store.prediction(p.id).error))
        else:
            store.update_prediction(p.id, status="canceled", error="canceled by the user")
    if unfinished:
        raise CancelUnfinished(job.id, len(unfinished), unfinished[-1])
    return job, n


class CancelUnfinished(BackendError):
    """`shd cancel`: the job is canceled, but some of its predictions could not be canceled on the server."""

    def __init__(self, job_id: str, count: int, error: str):
        super().__init__(f"job {job_id} is canceled, but {count} prediction(s) could not be canceled on Replicate "
                         f"({error.removeprefix('cancel failed: ')}); they may run on and be billed: "
                         f"`shd cancel {job_id}` again cancels them")

"""`shd process VIDEO`: one video to the end, in the foreground, whoever else uses the state directory. It always
ends, with one line saying why and the exit code of the README's table.

* Nobody holds the state directory (lock.py): this process takes it and works the job itself.
* A daemon holds it: the job is recorded, queued, for the daemon to work (so nothing is worked twice or paid
  twice), and this process follows it to the end, exiting as it would have: 0 and the output path, or the
  failure's exit code and reason. Should the daemon stop meanwhile, this process takes over and finishes the job.
* Another `shd process` holds it: this one waits for it, then goes on as above (an `--output` that the other one
  wrote meanwhile is refused then, as it would have been at the start: before anything is paid).
* The same file again (the same content and the settings its paid work depends on: identity.py) resumes its
  unfinished job, whatever stopped it, instead of paying for every frame again.
* It does not wait for ever: credentials Replicate refuses end it at once (exit 6), an API that stays unreachable
  for `replicate.unreachable_patience` seconds ends it (exit 6), a disk or database error that stops the job ends
  it (exit 4 or 5), each with the reason; the job stays recorded and `shd process` (the same file) or `shd run`
  resumes it. Following a daemon, the daemon's holds (its heartbeat, liveness.py) end it the same way.
Interrupted (Ctrl-C, SIGTERM, SIGHUP), the job stays recorded: `shd run` resumes it, or the daemon goes on with
it.
Held by a budget cap, it ends too (exit 8, saying why, once nothing of the job is in flight): the job keeps its
frames and what it paid for, and goes on when the budget allows. The estimate is printed before anything is paid.
The source video is never moved or changed, whoever works on it.
On a terminal, progress is one live line (`Screen`, progress.py), warnings above it; elsewhere, log lines.
"""

from __future__ import annotations

import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from shd import app as app_mod
from shd import config, identity, liveness, logs, names, outputs, perms, pricing, progress, status, watcher
from shd.config import Config
from shd.errors import BackendError, BudgetHeld, Interrupted, OutputExists, ShdError, UsageError
from shd.lock import StateLock
from shd.scheduler.holds import Paused
from shd.scheduler.outage import KIND as UNREACHABLE
from shd.states import JobState
from shd.store import Job, Store

FOLLOW_EVERY = 0.5  # seconds between looks at a job the daemon works on, or at a lock another process holds
FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELED)
RESUMES = "`shd process` (the same file) or `shd run` resumes it"


class Screen:
    """Where `shd process` speaks: stderr, line by line; on a terminal, one live progress line (progress.py) with
    messages and warnings printed above it (every log line with `verbose`). `log_file`: the log goes there."""

    def __init__(self, cfg: Config, *, verbose: bool = False, log_file: TextIO | None = None):
        self.live = progress.LiveLine(sys.stderr) if sys.stderr.isatty() else None
        if log_file is not None:
            logs.setup(cfg.log.level, cfg.log.format, out=log_file)
        elif self.live is not None:
            level = cfg.log.level if verbose else max(cfg.log.level, "warning", key=logs.LEVELS.index)
            logs.setup(level, cfg.log.format, out=self.live)

    def say(self, text: str) -> None:
        out = self.live or sys.stderr
        out.write(f"shd: {text}\n")
        out.flush()

    @contextmanager
    def following(self, store: Store, job_id: str) -> Iterator[None]:
        """Show the job's progress on the live line (if any) while the block runs."""
        if self.live is None:
            yield
            return
        ticker = progress.Ticker(self.live, lambda: status.job_summary(store, store.job(job_id))).start()
        try:
            yield
        finally:
            ticker.stop()

    def close(self) -> None:
        if self.live is not None:
            self.live.close()


def give_up(paused: Sequence[Paused], patience: float, now: float) -> str | None:
    """PURE: why `shd process` stops waiting, or None to wait on: refused credentials at once; an unreachable API
    once it has been unreachable for `patience` seconds. (Other holds are waited out.)"""
    for p in paused:
        if p.kind == "auth":
            return p.reason
        if p.kind == UNREACHABLE and p.since is not None and now - p.since >= patience:
            return f"{p.reason}; gave up after {patience:g} s (replicate.unreachable_patience)"
    return None


class Source:
    """The video given on the command line, and what identifies its work (computed once: hashing takes a while)."""

    def __init__(self, cfg: Config, video: Path, output: Path | None, overwrite: bool):
        self.video, self.output, self.overwrite = video, output, overwrite
        self.settings = identity.settings_digest(cfg)
        try:
            self.digest: str | None = identity.file_digest(video)
        except OSError:
            self.digest = None  # missing or unreadable: its job fails with the reason (exit 3)

    def owns_output(self, cfg: Config) -> bool:
        """Whether `--output` is the video this file's unfinished job published before (a done job that `shd retry`
        sent back to work): its own, replaced in place once the job is done again, not another's to refuse."""
        if self.output is None or self.digest is None or not cfg.paths.database.exists():
            return False
        store = Store.open_readonly(cfg.paths.database)
        try:
            old = store.unfinished_job_of("process", self.digest, self.settings)
        finally:
            store.close()
        return old is not None and old.output == str(self.output.absolute())

    def job(self, cfg: Config, store: Store, screen: Screen, tail: str = "") -> Job:
        """The unfinished job of the same work, pointed at this file and output, else a new job; said on `screen`."""
        old = None if self.digest is None else store.unfinished_job_of("process", self.digest, self.settings)
        if old is not None:
            store.update_job(old.id, source_path=self.video.absolute(), overwrite=int(self.overwrite),
                             output_target=self.output.absolute() if self.output else None)
            job = store.job(old.id)
            again = " (the same file again: its unfinished job resumes, nothing paid for is paid again)"
        else:
            job = app_mod.create_process_job(cfg, store, self.video, self.output, overwrite=self.overwrite,
                                             source_sha256=self.digest, settings_sha256=self.settings)
            again = ""
        screen.say(f"job {job.id}: {job.source_name}{again}{tail}")
        return job


def run(cfg: Config, video: Path, output: Path | None, overwrite: bool, *, verbose: bool = False,
        log_file: TextIO | None = None) -> int:
    """Process `video` (output: `output`, else the outbox); returns the exit code, prints the output path."""
    config.read_token(cfg)  # nothing starts without a token, whoever ends up doing the work
    _refuse_inbox_file(cfg, video)
    source = Source(cfg, video, output, overwrite)
    _refuse_taken_output(output, overwrite or source.owns_output(cfg))
    screen = Screen(cfg, verbose=verbose, log_file=log_file)
    lock = StateLock(cfg.paths.state_dir)
    job_id: str | None = None
    waiting_for: int | None = None
    try:
        while not lock.acquire("process"):
            holder = lock.holder()
            if holder is not None and holder.kind == "daemon":
                store = Store.open(cfg.paths.database)
                try:
                    if job_id is None:
                        job_id = source.job(cfg, store, screen, f": handed to the daemon (pid {holder.pid}) that "
                                                                f"runs on {cfg.paths.state_dir}; following it").id
                    with screen.following(store, job_id):
                        followed = _follow(cfg, store, job_id, lock, screen)
                except KeyboardInterrupt:
                    screen.say(f"interrupted; the daemon (pid {holder.pid}) goes on with job {job_id}")
                    return Interrupted.exit_code
                finally:
                    store.close()
                if isinstance(followed, Job):
                    return _report(followed, screen)
                if isinstance(followed, ShdError):
                    screen.say(f"{followed}; the daemon (pid {holder.pid}) goes on with job {job_id} once that "
                               "is fixed")
                    return followed.exit_code
                screen.say(f"the daemon stopped; job {job_id} goes on here")
                break
            if holder is not None and holder.pid != waiting_for:
                waiting_for = holder.pid
                screen.say(f"waiting for `shd process` (pid {holder.pid}), which works on {cfg.paths.state_dir}")
            time.sleep(FOLLOW_EVERY)
        if job_id is None and waiting_for is not None:
            # the one we waited for may have written it: refused unpaid
            _refuse_taken_output(output, overwrite or source.owns_output(cfg))
        return _work(cfg, source, job_id, screen)
    finally:
        lock.release()
        screen.close()


def _refuse_inbox_file(cfg: Config, video: Path) -> None:
    """UsageError (exit 2) for a video in the inbox (one the watcher does not ignore): `shd run` takes it from there
    as a job of its own, now or when it next starts, so working it here too would make two jobs, and two videos, of
    one file. The file that would be read counts, wherever a link to it lies (a link in the inbox is never a job)."""
    try:
        real = video.resolve()
        in_inbox = real.parent == cfg.paths.inbox.resolve()
    except OSError:  # a folder that cannot be resolved is not the inbox; the video's own problems are said later
        return
    if in_inbox and not watcher.is_ignored(real.name):
        raise UsageError(f"{video}: it is in the inbox ({cfg.paths.inbox}), where `shd run` takes it as a job of its "
                         "own; follow that job with `shd status`, or give `shd process` a video from elsewhere")


def _refuse_taken_output(output: Path | None, overwrite: bool) -> None:
    """UsageError (exit 2) if a sidecar `--output` would get beside it cannot have its name (past NAME_MAX), or if
    one of those names is taken by something that is not a file (a folder, /dev/null: --overwrite never replaces it);
    OutputExists (exit 2) if `--output` or a sidecar it would get exists, unless `--overwrite`."""
    if output is not None:
        stem = output.name[:len(output.name) - len(output.suffix)]
        room = names.NAME_MAX - max(names.byte_len(suffix) for suffix in (output.suffix, *outputs.SIDECARS))
        if names.byte_len(stem) > room:
            raise UsageError(f"{output}: the sidecars beside it ({names.shorten(stem, 16)}....prompts.csv and the "
                             f"others) would pass the {names.NAME_MAX}-byte name limit; give --output a name whose "
                             f"stem takes at most {room} bytes")
    for path in outputs.beside(output) if output is not None else []:
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):  # a link is replaced, never what it points to
            what = "a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
            raise UsageError(f"{path}: is {what}, not a file; --overwrite replaces files only: choose another "
                             "--output")
    taken = [path for path in outputs.beside(output) if path.exists()] if output is not None and not overwrite else []
    if taken:
        raise OutputExists(taken[0], ("" if taken[0] == output else "the output's sidecars go there; ")
                           + "choose another --output, or add --overwrite to replace it")


def _follow(cfg: Config, store: Store, job_id: str, lock: StateLock, screen: Screen) -> Job | ShdError | None:
    """Wait for the daemon to finish the job: the job once finished, or held by a budget cap; the reason to stop
    following if the daemon is held too long otherwise (its heartbeat says why); None once the daemon is gone and
    this process holds the lock."""
    told = False
    while True:
        job = store.job(job_id)
        if job.estimate_usd is not None and not told:  # the daemon estimates the job once it has probed it
            told = True
            screen.say(f"estimate: about {pricing.usd(job.estimate_usd)} and "
                       f"{pricing.duration(job.estimate_seconds or 0)} of predictions")
        if job.state in FINISHED or job.held:
            return job
        if lock.acquire("process"):
            return None
        beat = liveness.read_beat(cfg.paths.state_dir)
        if beat is not None and beat.kind == "daemon":
            why = give_up(beat.paused, cfg.replicate.unreachable_patience, time.time())
            if why is not None:
                return BackendError(why)
        time.sleep(FOLLOW_EVERY)


def _work(cfg: Config, source: Source, job_id: str | None, screen: Screen) -> int:
    app = app_mod.build(cfg, check_store=True)
    stop_beating: Callable[[], None] | None = None
    try:
        if source.output is None:  # made at the start, as the daemon does: publishing waits if it vanishes later
            perms.make_configured_folder("outbox", cfg.paths.outbox)
        if job_id is None:
            job_id = source.job(cfg, app.store, screen).id
        stop_beating = _heartbeat(cfg, app, job_id)

        def left() -> ShdError | None:
            why = give_up(app.engine.paused_by(), cfg.replicate.unreachable_patience, time.time())
            if why is not None:
                return BackendError(why)
            # Held by a budget cap (its own, or the day's or month's): ends once nothing of it is in flight.
            held = app.store.job(job_id).held
            if held and not app.store.predictions(job_id, live=True):
                return BudgetHeld(held)
            return None

        app.runner.give_up = left
        app.runner.on_estimate = lambda _job, est: screen.say(f"estimate: {est.summary()}")
        stopped: ShdError
        try:
            with screen.following(app.store, job_id):
                job = app.runner.run_job(job_id)
        except KeyboardInterrupt:
            job, stopped = app.store.job(job_id), Interrupted("interrupted")
        else:
            stopped = app.runner.deferred.get(job_id) or ShdError(f"job {job_id} stopped while {job.state}")
    finally:
        if stop_beating is not None:
            stop_beating()
        app.close()
    if job.state in FINISHED:
        return _report(job, screen)
    screen.say(f"{stopped}; job {job_id} is recorded: {RESUMES}")  # said last, once everything has stopped
    return stopped.exit_code


def _heartbeat(cfg: Config, app: app_mod.App, job_id: str) -> Callable[[], None]:
    """Beat (liveness.py) in a thread of its own, so `shd status` shows this job as worked on; returns the function
    that stops it, with a last beat saying when the work stopped."""
    heartbeat = liveness.Heartbeat(cfg.paths.state_dir, "process")
    done = threading.Event()

    def beat(force: bool = False) -> None:
        try:
            heartbeat.beat(app.engine.paused_by(), [job_id], force=force)
        except OSError as e:  # a full disk: `shd status` may show the job as interrupted; the work goes on
            logs.get(job=job_id).warning("heartbeat_not_written", error=str(e))

    def loop() -> None:
        while not done.wait(liveness.BEAT_EVERY / 2):
            beat()

    def stop() -> None:
        done.set()
        thread.join()
        beat(force=True)

    beat(force=True)
    thread = threading.Thread(target=loop, name="shd-heartbeat", daemon=True)
    thread.start()
    return stop


def _report(job: Job, screen: Screen) -> int:
    screen.close()  # the live line ends before the output path or the reason
    if job.state == JobState.DONE:
        print(job.output, flush=True)
        return 0
    if job.held and job.state not in FINISHED:  # followed: the daemon holds it
        screen.say(f"{BudgetHeld(job.held)}; job {job.id} keeps its frames and what it paid for, and the daemon goes "
                   "on with it without paying twice once the budget allows")
        return BudgetHeld.exit_code
    screen.say(job.error or f"job {job.id} is {job.state}")
    return job.exit_code or 1

"""`shd process VIDEO`: one video to the end, in the foreground, whoever else uses the state directory.

* Nobody holds the state directory (lock.py): this process takes it and works the job itself.
* A daemon holds it: the job is recorded, queued, for the daemon to work (so nothing is worked twice or paid
  twice), and this process follows it to the end, exiting as it would have: 0 and the output path, or the
  failure's exit code and reason. Should the daemon stop meanwhile, this process takes over and finishes the job.
* Another `shd process` holds it: this one waits for it, then goes on as above.
Interrupted (Ctrl-C, SIGTERM), the job stays recorded: `shd run` resumes it, or the daemon goes on with it.
Held by a budget cap, it ends too (exit 8, saying why, once nothing of the job is in flight): the job keeps its
frames and what it paid for, and goes on when the budget allows. The estimate is printed before anything is paid.
The source video is never moved or changed, whoever works on it.
On a terminal, progress is one live line (`Screen`, progress.py), warnings above it; elsewhere, log lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from shd import app as app_mod
from shd import config, logs, outputs, pricing, progress, status
from shd.config import Config
from shd.errors import OutputExists
from shd.lock import StateLock
from shd.states import JobState
from shd.store import Job, Store

FOLLOW_EVERY = 0.5  # seconds between looks at a job the daemon works on, or at a lock another process holds
EXIT_HELD = 8
EXIT_INTERRUPTED = 130
FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELED)


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


def run(cfg: Config, video: Path, output: Path | None, overwrite: bool, *, verbose: bool = False,
        log_file: TextIO | None = None) -> int:
    """Process `video` (output: `output`, else the outbox); returns the exit code, prints the output path."""
    config.read_token(cfg)  # nothing starts without a token, whoever ends up doing the work
    taken = [path for path in outputs.beside(output) if path.exists()] if output is not None and not overwrite else []
    if taken:
        raise OutputExists(taken[0], ("" if taken[0] == output else "the output's sidecars go there; ")
                           + "choose another --output, or add --overwrite to replace it")
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
                        job_id = app_mod.create_process_job(cfg, store, video, output, overwrite=overwrite).id
                        screen.say(f"job {job_id}: {video.name}: handed to the daemon (pid {holder.pid}) that runs "
                                   f"on {cfg.paths.state_dir}; following it")
                    with screen.following(store, job_id):
                        job = _follow(store, job_id, lock, screen)
                except KeyboardInterrupt:
                    screen.say(f"interrupted; the daemon (pid {holder.pid}) goes on with job {job_id}")
                    return EXIT_INTERRUPTED
                finally:
                    store.close()
                if job is not None:
                    return _report(job, screen)
                screen.say(f"the daemon stopped; job {job_id} goes on here")
                break
            if holder is not None and holder.pid != waiting_for:
                waiting_for = holder.pid
                screen.say(f"waiting for `shd process` (pid {holder.pid}), which works on {cfg.paths.state_dir}")
            time.sleep(FOLLOW_EVERY)
        return _work(cfg, video, output, overwrite, job_id, screen)
    finally:
        lock.release()
        screen.close()


def _follow(store: Store, job_id: str, lock: StateLock, screen: Screen) -> Job | None:
    """Wait for the daemon to finish (or hold) the job; None once the daemon is gone and this process holds the
    lock."""
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
        time.sleep(FOLLOW_EVERY)


def _work(cfg: Config, video: Path, output: Path | None, overwrite: bool, job_id: str | None, screen: Screen) -> int:
    app = app_mod.build(cfg, check_store=True)
    try:
        if job_id is None:
            job = app_mod.create_process_job(cfg, app.store, video, output, overwrite=overwrite)
            screen.say(f"job {job.id}: {job.source_name}")
            job_id = job.id
        app.runner.end_when_held = True
        app.runner.on_estimate = lambda _job, est: screen.say(f"estimate: {est.summary()}")
        try:
            with screen.following(app.store, job_id):
                job = app.runner.run_job(job_id)
        except KeyboardInterrupt:
            screen.say(f"interrupted; job {job_id} is recorded, `shd run` resumes it")
            return EXIT_INTERRUPTED
        deferred = app.runner.deferred.get(job_id)
        if job.state not in FINISHED and deferred is not None:
            screen.say(f"{deferred}; job {job_id} is kept, `shd run` resumes it")
            return deferred.exit_code
        return _report(job, screen)
    finally:
        app.close()


def _report(job: Job, screen: Screen) -> int:
    screen.close()  # the live line ends before the output path or the reason
    if job.state == JobState.DONE:
        print(job.output, flush=True)
        return 0
    if job.held and job.state not in FINISHED:
        screen.say(f"held: {job.held}; job {job.id} keeps its frames and what it paid for, and goes on without "
                   f"paying twice once the budget allows (`shd run` resumes it)")
        return EXIT_HELD
    screen.say(job.error or f"job {job.id} is {job.state}")
    return job.exit_code or 1

"""`shd run`: the daemon's main loop.

The main thread owns the loop: it takes stable files from the watcher, claims them as jobs, keeps up to
`pipeline.max_jobs` job threads going (oldest first, resumed jobs included), and talks to systemd. Signal handlers
only set flags and wake the loop (they never touch the store):
  SIGTERM / SIGINT   stop taking work, send STOPPING=1, let workers finish their current write, exit promptly;
                     every remote prediction is already recorded, so the next start resumes it.
  SIGHUP             reload the config: live settings apply at once; a bad new config is refused, the old kept.
WATCHDOG=1 is sent only while the observer and the dispatcher are alive and the loop itself is turning.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

from shd import app as app_mod
from shd import config, hooks, jobs, logs
from shd.config import Config
from shd.errors import ConfigError, ShdError, StoreError
from shd.live import AppView
from shd.notify import Notifier
from shd.pipeline import start_job_thread
from shd.states import UNFINISHED_JOBS, JobState
from shd.store import Job
from shd.watcher import InboxWatcher
from shd.web import server as web

STOP_GRACE = 2.0     # seconds workers get to finish their current database write on shutdown
STATUS_EVERY = 5.0   # seconds between STATUS= updates
DEFER_RETRY = 30.0   # seconds before a job stopped by a disk-full or database error is tried again


class Daemon:
    def __init__(self, cfg: Config, config_arg: str | None, notifier: Notifier | None = None):
        self.cfg = cfg
        self.config_arg = config_arg
        self.notifier = notifier or Notifier.from_env()
        self.log = logs.get()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.app = app_mod.build(cfg, on_finished=self._on_finished)
        self.threads: dict[str, threading.Thread] = {}
        self._cooldown: dict[str, float] = {}  # job id -> when a deferred job may be tried again
        self.watcher: InboxWatcher | None = None
        self.hooks = hooks.from_config(cfg.hooks, paused=lambda: self.app.engine.paused,
                                       secrets=(config.read_token(cfg),))
        self.web: web.WebServer | None = None

    # --- signals: flags only ------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
        else:
            self._stop.set()
        if self.watcher is not None:
            self.watcher.wakeup.set()

    def install_signals(self) -> None:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_signal)

    # --- jobs ---------------------------------------------------------------------------------------------------
    def _on_finished(self, job: Job) -> None:
        if job.state == JobState.FAILED and job.mode == "daemon":
            try:
                dest = jobs.move_aside(self.cfg, self.app.store, self.app.store.job(job.id))
                self.log.warning("moved_aside", job=job.id, to=str(dest), reason=job.error)
            except (OSError, ShdError) as e:
                self.log.error("move_aside_failed", job=job.id, error=str(e))
        self.hooks.job_finished(self.app.store, job.id)

    def _claim(self, path: Path) -> None:
        try:
            job = jobs.claim(self.cfg, self.app.store, path, app_mod.new_job_id())
            self.log.info("claimed", job=job.id, source=path.name)
        except FileNotFoundError:
            self.log.info("vanished_before_claim", path=str(path))
        except (OSError, StoreError) as e:
            # Disk full, database trouble: loud, and the file stays in the inbox to be tried again.
            self.log.error("claim_failed_will_retry", path=str(path), error=str(e))
            assert self.watcher is not None
            self.watcher.candidate(path)

    def _schedule(self) -> None:
        now = time.monotonic()
        for job_id, t in list(self.threads.items()):
            if not t.is_alive():
                del self.threads[job_id]
                if job_id in self.app.runner.deferred:
                    self._cooldown[job_id] = now + DEFER_RETRY
        free = self.cfg.pipeline.max_jobs - len(self.threads)
        if free <= 0:
            return
        for job in self.app.store.jobs(tuple(UNFINISHED_JOBS)):
            if free <= 0:
                break
            if job.id in self.threads or (job.mode == "daemon" and not job.source_path):
                continue
            if self._cooldown.get(job.id, 0.0) > now:
                continue
            self.threads[job.id] = start_job_thread(self.app.runner, job.id)
            free -= 1

    # --- systemd ------------------------------------------------------------------------------------------------
    def summary(self) -> str:
        active = self.app.store.jobs(tuple(UNFINISHED_JOBS))
        done = total = failed = 0
        for j in active:
            p = self.app.store.progress(j.id)
            done += p["generated"]
            failed += p["failed"]
            total += max(j.frames_total or 0, p["extracted"])
        paused = f"; PAUSED: {self.app.engine.paused}" if self.app.engine.paused else ""
        return f"{len(active)} job(s) active, {done}/{total} frames painted, {failed} failed{paused}"

    def healthy(self) -> bool:
        return bool(self.watcher and self.watcher.is_alive() and self.app.engine.healthy())

    # --- reload -------------------------------------------------------------------------------------------------
    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = config.load(self.config_arg)
        except ConfigError as e:
            self.log.error("reload_refused_keeping_old_config", error=str(e))
            self.notifier.ready(self.summary())
            return
        kept = {"paths": self.cfg.paths, "watch": self.cfg.watch, "web": self.cfg.web, "hooks": self.cfg.hooks}
        if any(getattr(new, name) != value for name, value in kept.items()):
            self.log.warning("reload_paths_need_restart",
                             detail="[paths], [watch], [web] and [hooks] apply at the next start")
            new = config.replace(new, **kept)
        self.cfg = new
        self.app.cfg = new
        self.app.runner.cfg = new
        self.app.engine.reload(new)
        logs.setup(new.log.level, new.log.format)
        self.log.info("reloaded", concurrency=new.replicate.concurrency, max_jobs=new.pipeline.max_jobs)
        if self.app.engine.paused:  # the token may have been fixed along with the config: check now
            threading.Thread(target=self.app.engine.try_resume, name="shd-auth-check", daemon=True).start()
        self.notifier.ready(self.summary())

    # --- the loop -----------------------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg
        # The inbox is created only where its parent exists: a missing mount stays an error (the watcher names
        # it) rather than a fresh empty folder on the root filesystem.
        if cfg.paths.inbox.parent.is_dir():
            cfg.paths.inbox.mkdir(exist_ok=True)
        for d in (cfg.paths.outbox, cfg.paths.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        for job_id in jobs.finish_claims(self.app.store):
            self.log.error("claimed_file_vanished", job=job_id)
        self.watcher = InboxWatcher(cfg.paths.inbox, stable_seconds=cfg.watch.stable_seconds,
                                    polling=cfg.watch.observer == "polling", poll_interval=cfg.watch.poll_interval)
        self.watcher.start()
        self.hooks.start()
        try:
            self.web = web.start(cfg, AppView(self.app), self.app.ffmpeg)
        except ShdError as e:  # the page is a window on the work, not the work: the videos go on without it
            self.log.error("web_not_started", error=str(e))
        resumed = [j.id for j in self.app.store.jobs(tuple(UNFINISHED_JOBS))]
        self.log.info("started", inbox=str(cfg.paths.inbox), resumed=len(resumed), observer=cfg.watch.observer)
        self._schedule()
        self.notifier.ready(self.summary())
        ping = self.notifier.watchdog_interval()
        next_ping = next_status = next_rescan = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                try:
                    if self._reload.is_set():
                        self._reload.clear()
                        self.reload()
                    if not self.watcher.is_alive():
                        self.log.error("observer_died_restarting")
                        self.watcher.restart()
                    if now >= next_rescan:
                        self.watcher.rescan()
                        next_rescan = now + self.cfg.watch.rescan_interval
                    for path in self.watcher.poll():
                        self._claim(path)
                    self._schedule()
                    self.hooks.observe_pause()
                    if now >= next_status:
                        self.notifier.status(self.summary())
                        next_status = now + STATUS_EVERY
                except (StoreError, OSError) as e:
                    # The database or the disk is in trouble: say so loudly, keep the loop (and the watchdog
                    # pings, which stop only if the watcher or the scheduler die) going, and try again.
                    self.log.error("main_loop_error_will_retry", error=f"{type(e).__name__}: {e}")
                    self._stop.wait(1.0)
                if ping and now >= next_ping and self.healthy():
                    self.notifier.watchdog()
                    next_ping = now + ping
                wait = self.watcher.next_check_in()
                timeout = min(1.0, wait if wait is not None else 1.0)
                self.watcher.wakeup.wait(max(0.01, timeout))
                self.watcher.wakeup.clear()
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.notifier.stopping("stopping: every remote prediction is recorded and resumes at the next start")
        self.log.info("stopping", in_flight=self.app.engine.in_flight())
        self.app.engine.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.web is not None:
            self.web.stop()
        self.hooks.stop()
        deadline = time.monotonic() + STOP_GRACE
        for t in self.threads.values():
            t.join(max(0.0, deadline - time.monotonic()))
        self.app.store.close()  # waits for the write in progress, if any
        self.log.info("stopped")


def run(cfg: Config, config_arg: str | None) -> int:
    daemon = Daemon(cfg, config_arg)
    daemon.install_signals()
    return daemon.run()



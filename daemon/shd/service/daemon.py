"""`shd run`: the daemon's main loop.

First it takes the state directory's lock (state_dir.py, lock.py): another daemon there makes it exit 2, naming
that daemon's pid; a `shd process` there makes it wait until that one is done (logged, and in STATUS=). Then it
checks the whole database (a damaged one stops it with exit 5 before anything is claimed) and builds the app.
The main thread owns the loop: it takes stable files from the watcher, claims them as jobs, keeps up to
`pipeline.max_jobs` job threads going (job_threads.py), and talks to systemd (STATUS=: summary.py). Signal handlers
only set flags and wake the loop (they never touch the store):
  SIGTERM / SIGINT   stop taking work, send STOPPING=1, let workers finish their current write, exit promptly
                     (0 after SIGTERM, 130 after SIGINT, as the README's table says); every remote prediction is
                     already recorded, so the next start resumes it.
  SIGHUP             reload the config (reload.py): live settings apply at once, those built at start (RESTART_ONLY,
                     [paths], [watch], [web], [hooks]) are logged by name and kept until the next start; a bad new
                     config is refused, the old kept; nothing a reload meets ends the daemon.
WATCHDOG=1 is sent only while the loop itself turns, the inbox observer's threads are alive, and the scheduler's
dispatcher has turned within its own deadline (Engine.healthy); a long ffmpeg or prediction is bounded by its own
timeout instead. A database found damaged while running (`store.damaged`) ends the loop: exit 5, with the remedy.
On shutdown every ffmpeg child is stopped (children.py) before the process exits.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

from shd import app as app_mod
from shd import children, config, hooks, jobs, logs, perms
from shd.config import Config
from shd.errors import ConfigError, DiskFull, Interrupted, ShdError, StoreError
from shd.live import AppView
from shd.liveness import Heartbeat
from shd.lock import StateLock
from shd.notify import Notifier
from shd.service import state_dir
from shd.service.job_threads import JobThreads
from shd.service.reload import apply_config, read_new_config
from shd.service.summary import summary
from shd.states import UNFINISHED_JOBS, JobState
from shd.store import Job
from shd.watcher import InboxWatcher
from shd.web import server as web

STOP_GRACE = 2.0     # seconds workers get to finish their current database write on shutdown
STATUS_EVERY = 5.0   # seconds between STATUS= updates


class Daemon:
    def __init__(self, cfg: Config, config_arg: str | None, notifier: Notifier | None = None):
        self.cfg = cfg
        self.config_arg = config_arg
        self.notifier = notifier or Notifier.from_env()
        self.log = logs.get()
        self._stop = threading.Event()
        self._stopped_by: int | None = None  # the signal that stopped the daemon
        self._reload = threading.Event()
        self.lock = StateLock(cfg.paths.state_dir)
        self.heartbeat = Heartbeat(cfg.paths.state_dir, "daemon")
        self._heartbeat_failed = False
        self.app: app_mod.App  # built once the state directory is ours (see run)
        self.job_threads = JobThreads()
        self.watcher: InboxWatcher | None = None
        self.hooks = hooks.from_config(cfg.hooks, paused=lambda: self.app.engine.paused,
                                       secrets=(config.read_token(cfg),))
        self.web: web.WebServer | None = None

    # --- signals: flags only ------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
        else:
            self._stopped_by = self._stopped_by or signum
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
        assert self.watcher is not None
        try:
            job = jobs.claim(self.cfg, self.app.store, path, app_mod.new_job_id())
            self.log.info("claimed", job=job.id, source=path.name)
            if job.state == JobState.FAILED:  # the file was swapped for a link as it was claimed
                self._on_finished(job)
        except FileNotFoundError:
            self.log.info("vanished_before_claim", path=str(path))
        except jobs.NotAFile as e:
            self.log.warning("inbox_entry_skipped", path=str(path), reason=e.reason)
        except (OSError, StoreError, DiskFull) as e:
            if self.app.store.damaged:
                raise self.app.store.damaged from None
            # Disk full, database trouble: loud, and the file stays in the inbox to be tried again.
            self.log.error("claim_failed_will_retry", path=str(path), error=str(e))
            self.watcher.candidate(path)

    # --- systemd ------------------------------------------------------------------------------------------------
    def healthy(self) -> bool:
        return bool(self.watcher and self.watcher.is_alive() and self.app.engine.healthy())

    def beat(self, *, force: bool = False) -> None:
        """The heartbeat `shd status` reads (liveness.py): alive, and why paused. A full disk is said once."""
        try:
            self.heartbeat.beat(self.app.engine.paused_by(), force=force)
            self._heartbeat_failed = False
        except OSError as e:
            if not self._heartbeat_failed:
                self.log.error("heartbeat_not_written", error=str(e))
            self._heartbeat_failed = True

    # --- reload -------------------------------------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: apply the new config's live settings now; what is built once at start (RESTART_ONLY) is kept and
        logged by name (`reload_needs_restart`); a bad file is refused and the old config kept. Never raises."""
        self.notifier.reloading()
        try:
            new = read_new_config(self.cfg, self.config_arg, self.log)
            self.cfg = new
            apply_config(self.app, new, self.log)
        except ConfigError as e:
            self.log.error("reload_refused_keeping_old_config", error=str(e))
        except Exception as e:  # SIGHUP must never take the daemon down: said (with the traceback), the old kept
            self.log.exception("reload_failed_keeping_old_config", error=f"{type(e).__name__}: {e}")
        self.notifier.ready(summary(self.app))

    # --- the loop -----------------------------------------------------------------------------------------------
    def run(self) -> int:
        config.read_token(self.cfg)  # a missing token is said at once, not after waiting for the state directory
        try:
            if state_dir.take(self.lock, self.cfg.paths.state_dir, self.notifier, self.log, self._stop):
                self.app = app_mod.build(self.cfg, on_finished=self._on_finished, check_store=True)
                try:
                    self._loop()
                finally:
                    self.shutdown()
        finally:
            self.lock.release()
        return Interrupted.exit_code if self._stopped_by == signal.SIGINT else 0

    def _folders(self) -> None:
        """The outbox and the inbox, made if need be (the outbox first, with its parents: the defaults share
        ~/shd). The inbox is made only where its parent exists: a missing mount stays an error (the watcher names
        it) rather than a fresh empty folder on the root filesystem. A path that cannot be a folder (a file is
        there, no permission) is a ConfigError naming it (exit 2)."""
        perms.make_configured_folder("outbox", self.cfg.paths.outbox)
        if self.cfg.paths.inbox.parent.is_dir():
            perms.make_configured_folder("inbox", self.cfg.paths.inbox)

    def _loop(self) -> None:
        cfg = self.cfg
        self._folders()
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
        self.beat(force=True)
        self.job_threads.schedule(self.app, self.cfg.pipeline.max_jobs)
        self.notifier.ready(summary(self.app))
        ping = self.notifier.watchdog_interval()
        next_ping = next_status = next_rescan = 0.0
        said_paused = self.app.engine.paused
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
                self.job_threads.schedule(self.app, self.cfg.pipeline.max_jobs)
                self.hooks.observe_pause()
                self.beat()
                paused = self.app.engine.paused
                if now >= next_status or paused != said_paused:  # a pause is said at once
                    self.notifier.status(summary(self.app))
                    next_status, said_paused = now + STATUS_EVERY, paused
            except (StoreError, DiskFull, OSError) as e:
                if self.app.store.damaged:
                    raise self.app.store.damaged from None
                # The database or the disk is in trouble: say so loudly, keep the loop (and the watchdog
                # pings) going, and try again.
                self.log.error("main_loop_error_will_retry", error=f"{type(e).__name__}: {e}")
                self._stop.wait(1.0)
            if self.app.store.damaged:  # found by a job or a worker: nothing more can be recorded safely
                raise self.app.store.damaged
            if ping and now >= next_ping and self.healthy():
                self.notifier.watchdog()
                next_ping = now + ping
            wait = self.watcher.next_check_in()
            timeout = min(1.0, wait if wait is not None else 1.0)
            self.watcher.wakeup.wait(max(0.01, timeout))
            self.watcher.wakeup.clear()

    def shutdown(self) -> None:
        self.notifier.stopping("stopping: every remote prediction is recorded and resumes at the next start")
        self.log.info("stopping", in_flight=self.app.engine.in_flight())
        self.app.engine.stop()
        self.beat(force=True)  # when the work stopped: an interrupted job's clock stops there
        if self.watcher is not None:
            self.watcher.stop()
        if self.web is not None:
            self.web.stop()
        self.hooks.stop()
        stopped = children.stop_all(for_good=True)  # job threads see their ffmpeg end and stop
        deadline = time.monotonic() + STOP_GRACE
        self.job_threads.join(deadline)
        try:
            self.app.store.close()  # waits for the write in progress, if any
        except StoreError as e:
            self.log.error("store_close_failed", error=str(e))
        self.log.info("stopped", ffmpeg_stopped=stopped)


def run(cfg: Config, config_arg: str | None) -> int:
    daemon = Daemon(cfg, config_arg)
    daemon.install_signals()
    return daemon.run()



"""`shd run`: the daemon's main loop.

First it takes the state directory's lock (lock.py): another daemon there makes it exit 2, naming that daemon's
pid; a `shd process` there makes it wait until that one is done (logged, and in STATUS=). Then it checks the whole
database (a damaged one stops it with exit 5 before anything is claimed) and builds the app.
The main thread owns the loop: it takes stable files from the watcher, claims them as jobs, keeps up to
`pipeline.max_jobs` job threads going (oldest first, resumed jobs included), and talks to systemd. Signal handlers
only set flags and wake the loop (they never touch the store):
  SIGTERM / SIGINT   stop taking work, send STOPPING=1, let workers finish their current write, exit promptly
                     (0 after SIGTERM, 130 after SIGINT, as the README's table says); every remote prediction is
                     already recorded, so the next start resumes it.
  SIGHUP             reload the config: live settings apply at once, those built at start (RESTART_ONLY, [paths],
                     [watch], [web], [hooks]) are logged by name and kept until the next start; a bad new config
                     is refused, the old kept; nothing a reload meets ends the daemon.
WATCHDOG=1 is sent only while the loop itself turns, the inbox observer's threads are alive, and the scheduler's
dispatcher has turned within its own deadline (Engine.healthy); a long ffmpeg or prediction is bounded by its own
timeout instead. A database found damaged while running (`store.damaged`) ends the loop: exit 5, with the remedy.
On shutdown every ffmpeg child is stopped (children.py) before the process exits.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from shd import app as app_mod
from shd import children, config, hooks, jobs, logs, perms, pricing
from shd.config import Config
from shd.errors import ConfigError, DiskFull, Interrupted, ShdError, StateDirBusy, StoreError
from shd.live import AppView
from shd.liveness import Heartbeat
from shd.lock import StateLock
from shd.notify import Notifier
from shd.pipeline import start_job_thread
from shd.states import UNFINISHED_JOBS, JobState
from shd.store import Job
from shd.watcher import InboxWatcher
from shd.web import server as web

STOP_GRACE = 2.0     # seconds workers get to finish their current database write on shutdown
STATUS_EVERY = 5.0   # seconds between STATUS= updates
DEFER_RETRY = 30.0   # seconds before a job stopped by a disk-full or database error is tried again
LOCK_WAIT = 0.5      # seconds between tries at a state directory a `shd process` holds
START_EXTENSION = 30.0  # seconds asked of systemd at a time while waiting for the lock (EXTEND_TIMEOUT_USEC)
# Replicate settings built into the client and the models once, at start: a reload logs them and keeps the old.
RESTART_ONLY = ("create_wait", "request_timeout", "inline_max_kb", "prompt_model", "image_model", "film_model",
                "prompt_input", "image_input")


def summary_line(active: int, done: int, total: int, failed: int, paused: str | None, held: list[str]) -> str:
    """PURE: STATUS='s one line. `paused`: every hold's reason, joined (scheduler/holds.py); `held`: the reasons of
    the jobs a budget cap holds. A daily or monthly cap is already among the pause's reasons; a job's own cap is
    said after the count."""
    line = f"{active} job(s) active, {done}/{total} frames painted, {failed} failed"
    if paused:
        line += f"; PAUSED: {paused}"
    if held:
        own = [h for h in held if not (paused and h in paused)]
        line += f"; HELD: {len(held)} job(s)" + (f": {own[0]}" if own else "")
    return line


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
            self._stopped_by = self._stopped_by or signum
            self._stop.set()
        if self.watcher is not None:
            self.watcher.wakeup.set()

    # --- the state directory ------------------------------------------------------------------------------------
    def take_state_dir(self) -> bool:
        """Take the state directory's lock, waiting while a `shd process` holds it. StateDirBusy if a daemon holds
        it; False if told to stop while waiting."""
        waiting_for = None
        while not self.lock.acquire("daemon"):
            holder = self.lock.holder()
            if holder is not None and holder.kind == "daemon":
                raise StateDirBusy(f"{self.lock.path}: another shd daemon (pid {holder.pid}) runs on "
                                   f"{self.cfg.paths.state_dir}; stop it first, or give this one another state_dir")
            if holder is not None and holder.pid != waiting_for:
                waiting_for = holder.pid
                self.log.warning("waiting_for_state_dir", holder=holder.kind, holder_pid=holder.pid,
                                 lock=str(self.lock.path))
                self.notifier.status(f"waiting for shd {holder.kind} (pid {holder.pid}) to finish with "
                                     f"{self.cfg.paths.state_dir}")
            self.notifier.extend_timeout(START_EXTENSION)
            if self._stop.wait(LOCK_WAIT):
                return False
        return True

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
        held = [j.held for j in active if j.held]
        return summary_line(len(active), done, total, failed, self.app.engine.paused, held)

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
            self._reload_config()
        except ConfigError as e:
            self.log.error("reload_refused_keeping_old_config", error=str(e))
        except Exception as e:  # SIGHUP must never take the daemon down: said (with the traceback), the old kept
            self.log.exception("reload_failed_keeping_old_config", error=f"{type(e).__name__}: {e}")
        self.notifier.ready(self.summary())

    def _reload_config(self) -> None:
        new = config.load(self.config_arg)
        kept = {"paths": self.cfg.paths, "watch": self.cfg.watch, "web": self.cfg.web, "hooks": self.cfg.hooks}
        restart = [f"[{name}]" for name, value in kept.items() if getattr(new, name) != value]
        old_r = self.cfg.replicate
        restart += [f"replicate.{key}" for key in RESTART_ONLY if getattr(new.replicate, key) != getattr(old_r, key)]
        if restart:
            self.log.warning("reload_needs_restart", settings=restart,
                             detail="these apply at the next start (`systemctl restart shd`); the rest applies now")
        new = config.replace(new, **kept, replicate=dataclasses.replace(
            new.replicate, **{key: getattr(old_r, key) for key in RESTART_ONLY}))
        # The models in use stay until the next start, and so do their prices where the new file has none for them
        # (it prices the models it names): spend on them must stay counted and capped.
        prices = dict(new.prices)
        for ref in (old_r.prompt_model, old_r.image_model, old_r.film_model):
            if pricing.price_for(prices, ref) is None:
                for key in (ref, ref.partition(":")[0]):
                    if key in self.cfg.prices:
                        prices[key] = self.cfg.prices[key]
                self.log.warning("reload_keeps_price", model=ref,
                                 detail="the model in use until the next start keeps its price")
        new = config.replace(new, prices=prices)
        self.cfg = new
        self.app.cfg = new
        self.app.runner.cfg = new
        self.app.engine.reload(new)
        logs.setup(new.log.level, new.log.format)
        self.log.info("reloaded", concurrency=new.replicate.concurrency, max_jobs=new.pipeline.max_jobs)
        if self.app.engine.paused:  # the token may have been fixed along with the config: check now
            threading.Thread(target=self.app.engine.try_resume, name="shd-auth-check", daemon=True).start()

    # --- the loop -----------------------------------------------------------------------------------------------
    def run(self) -> int:
        config.read_token(self.cfg)  # a missing token is said at once, not after waiting for the state directory
        try:
            if self.take_state_dir():
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
        self._schedule()
        self.notifier.ready(self.summary())
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
                self._schedule()
                self.hooks.observe_pause()
                self.beat()
                paused = self.app.engine.paused
                if now >= next_status or paused != said_paused:  # a pause is said at once
                    self.notifier.status(self.summary())
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
        for t in self.threads.values():
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            self.app.store.close()  # waits for the write in progress, if any
        except StoreError as e:
            self.log.error("store_close_failed", error=str(e))
        self.log.info("stopped", ffmpeg_stopped=stopped)


def run(cfg: Config, config_arg: str | None) -> int:
    daemon = Daemon(cfg, config_arg)
    daemon.install_signals()
    return daemon.run()



"""Notifications: when a job is done or failed, and when the daemon pauses or resumes, run the configured command
(`[hooks] command`) with the facts in environment variables and/or POST them as JSON to `[hooks] webhook`.

- Events: `job.done`, `job.failed`, `daemon.paused`, `daemon.resumed`. The JSON body (`payload()`) and the
  command's environment (`command_env()`) carry the same facts: event, time, job id, state, source, output path,
  reason (a job's error or the pause reason), cost (what its predictions cost) and frame counts.
- The webhook body is signed: `X-Shd-Signature-256: sha256=<hex HMAC-SHA256 of the body>` with the secret from
  `$CREDENTIALS_DIRECTORY/webhook_secret` or `[hooks] secret_file` (unsigned when neither is set). Each request
  has `[hooks] timeout`; a network error, 408, 429 or 5xx is retried `[hooks] retries` times with backoff, under
  the same `X-Shd-Delivery` id.
- The command runs without a shell, in a session of its own, with the daemon's environment minus the Replicate
  token (and the credentials folder holding it); it is killed, with anything it started, after `[hooks] timeout`.
- Hooks run in background threads (one for the command, one for the webhook) fed by bounded queues: `send()`
  never blocks, so a hook that hangs or fails is logged and never delays or affects a job.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import queue
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shd import __version__, logs
from shd.config import Hooks as HooksConfig
from shd.errors import ConfigError, ShdError
from shd.limits import backoff
from shd.status import job_summary
from shd.store import Store

SECRET_CREDENTIAL = "webhook_secret"
SIGNATURE_HEADER = "X-Shd-Signature-256"
QUEUE_SIZE = 100
# Never handed to a hook command: the token itself, and the folder systemd's LoadCredential puts it in.
WITHHELD_ENV = ("REPLICATE_API_TOKEN", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True)
class Event:
    event: str                     # job.done, job.failed, daemon.paused, daemon.resumed
    at: float
    job_id: str | None = None
    state: str | None = None
    source: str | None = None
    output: str | None = None
    reason: str | None = None
    cost: Mapping[str, Any] | None = None
    frames: Mapping[str, int] | None = None


def job_event(summary: Mapping[str, Any], at: float | None = None) -> Event:
    """The event for a finished job, from its status summary (`shd.status.job_summary`)."""
    return Event(event=f"job.{summary['state']}", at=time.time() if at is None else at, job_id=summary["id"],
                 state=summary["state"], source=summary["source"], output=summary["output"],
                 reason=summary["error"], cost=summary.get("cost"), frames=summary["frames"])


def payload(e: Event) -> bytes:
    """The webhook's JSON body."""
    doc = {"event": e.event, "time": datetime.fromtimestamp(e.at, UTC).isoformat().replace("+00:00", "Z"),
           "job_id": e.job_id, "state": e.state, "source": e.source, "output": e.output, "reason": e.reason,
           "cost": dict(e.cost) if e.cost is not None else None,
           "frames": dict(e.frames) if e.frames is not None else None}
    return json.dumps(doc, separators=(",", ":")).encode()


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _decimal(usd: float) -> str:
    """Dollars as plain decimal text that any tool reads (`bc`, `awk`, a shell's printf): 0.000072, never 7.2e-05;
    to the millionth of a dollar, trailing zeros dropped."""
    return f"{usd:.6f}".rstrip("0").rstrip(".") or "0"


def command_env(e: Event, base: Mapping[str, str], secrets: tuple[str, ...] = ()) -> dict[str, str]:
    """The hook command's environment: `base` without the token (by name, and any variable holding one of
    `secrets`), plus SHD_EVENT, SHD_JOB_ID, SHD_JOB_STATE, SHD_SOURCE, SHD_OUTPUT, SHD_REASON, SHD_COST_USD
    (empty where unknown) and SHD_PAYLOAD (the webhook's JSON body)."""
    env = {k: v for k, v in base.items()
           if k not in WITHHELD_ENV and not any(s and s in v for s in secrets)}
    cost = e.cost.get("usd") if e.cost else None
    facts = {"SHD_EVENT": e.event, "SHD_JOB_ID": e.job_id, "SHD_JOB_STATE": e.state, "SHD_SOURCE": e.source,
             "SHD_OUTPUT": e.output, "SHD_REASON": e.reason, "SHD_COST_USD": None if cost is None else _decimal(cost),
             "SHD_PAYLOAD": payload(e).decode()}
    env.update({k: v or "" for k, v in facts.items()})
    return env


def read_secret(cfg: HooksConfig, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The webhook signing secret: `$CREDENTIALS_DIRECTORY/webhook_secret`, else `[hooks] secret_file`, else None.
    A secret_file that cannot be read is a ConfigError naming it."""
    env = os.environ if environ is None else environ
    if env.get("CREDENTIALS_DIRECTORY"):
        cred = Path(env["CREDENTIALS_DIRECTORY"]) / SECRET_CREDENTIAL
        if cred.is_file():
            return cred.read_bytes().strip() or None
    if cfg.secret_file is None:
        return None
    try:
        secret = cfg.secret_file.read_bytes().strip()
    except OSError as e:
        raise ConfigError(cfg.secret_file, [f"hooks.secret_file cannot be read: {e.strerror}"]) from None
    if not secret:
        raise ConfigError(cfg.secret_file, ["hooks.secret_file is empty"])
    return secret


class PauseWatch:
    """Turns the engine's pause reason, sampled now and then, into daemon.paused / daemon.resumed events."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def observe(self, reason: str | None, now: float) -> Event | None:
        if reason == self.reason:
            return None
        was, self.reason = self.reason, reason
        if reason is None:
            return Event(event="daemon.resumed", at=now, reason=was)
        return Event(event="daemon.paused", at=now, reason=reason)


class Hooks:
    """The configured hooks and their worker threads. `send()` queues an event for each configured hook."""

    def __init__(self, cfg: HooksConfig, secret: bytes | None, *, paused: Callable[[], str | None] = lambda: None,
                 environ: Mapping[str, str] | None = None, secrets: tuple[str, ...] = (), retry_base: float = 1.0):
        self.cfg = cfg
        self.paused = paused  # the engine's pause reason, read when the main loop turns and before job events
        self.retry_base = retry_base  # first webhook retry delay, seconds (doubles, with jitter, up to 30 s)
        self.secret = secret
        self.environ = dict(os.environ if environ is None else environ)
        self.secrets = secrets
        self.log = logs.get()
        self.pauses = PauseWatch()
        self._pause_lock = threading.Lock()
        self._stop = threading.Event()
        self._sinks: list[tuple[str, queue.Queue[Event | None], Callable[[Event], None]]] = []
        if cfg.command:
            self._sinks.append(("command", queue.Queue(QUEUE_SIZE), self._run_command))
        if cfg.webhook:
            self._sinks.append(("webhook", queue.Queue(QUEUE_SIZE), self._post))
            if secret is None:
                self.log.warning("webhook_unsigned", detail="no webhook_secret credential and no hooks.secret_file")
        self._threads = [threading.Thread(target=self._work, args=(name, q, fn), name=f"shd-hook-{name}",
                                          daemon=True) for name, q, fn in self._sinks]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, grace: float = 1.0) -> None:
        """Let the hooks running now finish for up to `grace` seconds; events still queued are logged as dropped."""
        self._stop.set()
        for _, q, _ in self._sinks:
            with contextlib.suppress(queue.Full):  # full: its worker is busy and sees the stop flag next
                q.put_nowait(None)
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for name, q, _ in self._sinks:
            while not q.empty():
                e = q.get_nowait()
                if e is not None:
                    self.log.warning("hook_dropped_at_stop", hook=name, hook_event=e.event, job=e.job_id)

    def send(self, e: Event) -> None:
        """Queue `e` for every configured hook; never blocks (a full queue drops the event, logged)."""
        for name, q, _ in self._sinks:
            try:
                q.put_nowait(e)
            except queue.Full:
                self.log.error("hook_queue_full_dropped", hook=name, hook_event=e.event, job=e.job_id)

    def job_finished(self, store: Store, job_id: str) -> None:
        """Send job.done / job.failed for a job that just finished (as the store has it now), after any pause change
        that came before it."""
        if not self._sinks:
            return
        self.observe_pause()
        try:
            self.send(job_event(job_summary(store, store.job(job_id))))
        except ShdError as err:
            self.log.error("hook_event_unreadable", job=job_id, error=str(err))

    def observe_pause(self) -> None:
        """Called on every turn of the main loop: sends daemon.paused / daemon.resumed when the reason changed."""
        with self._pause_lock:
            e = self.pauses.observe(self.paused(), time.time())
            if e is not None:
                self.send(e)

    def _work(self, name: str, q: queue.Queue[Event | None], fn: Callable[[Event], None]) -> None:
        while not self._stop.is_set():
            e = q.get()
            if e is None:  # stop() woke us
                return
            try:
                fn(e)
            except Exception as err:  # noqa: BLE001 - a broken hook must never take anything else down
                self.log.error("hook_crashed", hook=name, hook_event=e.event, job=e.job_id,
                               error=f"{type(err).__name__}: {err}")

    # --- the command ----------------------------------------------------------------------------------------------
    def _run_command(self, e: Event) -> None:
        log = self.log.bind(hook="command", hook_event=e.event, job=e.job_id)
        argv = shlex.split(self.cfg.command)
        # stderr goes to a file, not a pipe: a pipe held open by something the command left behind could block.
        with tempfile.TemporaryFile() as err_file:
            try:
                proc = subprocess.Popen(argv, env=command_env(e, self.environ, self.secrets),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file,
                                        start_new_session=True)
            except OSError as err:
                log.error("hook_failed", error=f"{argv[0]}: {err.strerror}")
                return
            try:
                code = proc.wait(timeout=self.cfg.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the command and anything it started
                proc.wait()
                log.error("hook_timed_out", timeout=self.cfg.timeout)
                return
            if code != 0:
                err_file.seek(max(0, err_file.seek(0, os.SEEK_END) - 500))
                log.error("hook_failed", exit_code=code, stderr=err_file.read().decode(errors="replace").strip())
            else:
                log.info("hook_ran")

    # --- the webhook ----------------------------------------------------------------------------------------------
    def _post(self, e: Event) -> None:
        log = self.log.bind(hook="webhook", hook_event=e.event, job=e.job_id)
        body = payload(e)
        headers = {"Content-Type": "application/json", "User-Agent": f"shd/{__version__}", "X-Shd-Event": e.event,
                   "X-Shd-Delivery": uuid.uuid4().hex}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        attempt = 0
        with httpx.Client(timeout=self.cfg.timeout) as client:
            while True:
                attempt += 1
                try:
                    r = client.post(self.cfg.webhook, content=body, headers=headers)
                    if r.status_code < 300:
                        log.info("hook_ran", status=r.status_code, attempt=attempt)
                        return
                    problem = f"HTTP {r.status_code}"
                    retryable = r.status_code in (408, 429) or r.status_code >= 500
                except httpx.HTTPError as err:
                    problem, retryable = f"{type(err).__name__}: {err}", True
                if not retryable or attempt > self.cfg.retries:
                    log.error("hook_failed", error=problem, attempts=attempt)
                    return
                delay = backoff(attempt, base=self.retry_base, cap=30.0)
                log.warning("hook_retrying", error=problem, attempt=attempt, retry_in=round(delay, 2))
                if self._stop.wait(delay):
                    log.warning("hook_given_up_at_stop", error=problem, attempts=attempt)
                    return


def from_config(cfg: HooksConfig, *, paused: Callable[[], str | None], secrets: tuple[str, ...] = ()) -> Hooks:
    """The hooks of `cfg` (none configured: a Hooks that sends nothing), secret read; not started yet."""
    return Hooks(cfg, read_secret(cfg) if cfg.webhook else None, paused=paused, secrets=secrets)

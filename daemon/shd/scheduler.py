"""Concurrency across jobs: every frame's paid stages, at most `replicate.concurrency` predictions in flight.

- Fair: each job has its own queue of ready tasks and the dispatcher takes from the jobs in turn, so a long video
  never starves a short one. Within a job, image tasks go first, so frames finish while others are still prompted.
- Pipelined: a frame's image task is queued the moment its prompt is stored; prompting starts as soon as
  extraction hands over the first frame.
- A slot is held from the create until the prediction is finished; the download happens after the slot is freed.
- Creations pass a token bucket (`limits.RateLimiter`); a 429 slows it and holds creations for `retry_after`.
- Every paid call is recorded (`store.begin_prediction`) before it is sent, and its id the moment it is known;
  `_resume` picks an interrupted prediction up from the ledger instead of paying again.
- A 401/402/403 pauses all work (`paused` says why) until `check_auth` passes with the current token.
Worker threads are daemons: on shutdown nothing waits for a prediction; the ledger lets the next start resume it.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shd import diskfull, logs
from shd.backends.base import ImageToPrompt, PromptToImage, Remote, Status, ledger_form
from shd.backends.replicate import model_failure
from shd.config import Config
from shd.errors import (
    AuthFailed,
    BackendError,
    DiskFull,
    ModelFailed,
    OutputGone,
    RateLimited,
    Rejected,
    ShdError,
    StoreError,
    Transient,
)
from shd.limits import RateLimiter, backoff
from shd.states import STAGE_STATES, FrameState, JobState, Stage
from shd.store import LIVE_PREDICTION, Frame, Job, Prediction, Store

KNOWN_STATUSES = ("starting", "processing", "succeeded", "failed", "canceled")
DISPATCH_DEADLINE = 60.0  # seconds: a dispatcher that has not turned for this long is wedged (it wakes every 5 s)
DISK_FULL_RETRY = 30.0    # seconds before a stage stopped by a full disk is tried again


class _Stopped(Exception):
    """Raised inside a worker when the engine stops; the prediction stays recorded for the next start."""


@dataclass(frozen=True)
class Task:
    job_id: str
    idx: int
    stage: Stage
    reason: str = "first"
    new_seed: bool = False
    seed_retries: int = 0


def image_suffix(data: bytes) -> str | None:
    """The file suffix for image bytes, from their magic number; None if they are not an image we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent or complete (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Engine:
    """Runs the paid stages of every enqueued frame. Thread-safe; `start()` it, `enqueue()` work, `stop()` it."""

    def __init__(self, cfg: Config, store: Store, remote: Remote, prompter: ImageToPrompt, painter: PromptToImage,
                 *, token_provider: Callable[[], str] | None = None, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.store = store
        self.remote = remote
        self.prompter = prompter
        self.painter = painter
        self.token_provider = token_provider
        self.clock = clock
        self.log = logs.get()
        self.limiter = RateLimiter(cfg.replicate.creations_per_minute)
        self.paused: str | None = None
        self._pause_check_at = 0.0
        lock = threading.Lock()
        self._cv = threading.Condition(lock)        # the dispatcher waits here: work queued, a slot freed
        self._work_cv = threading.Condition(lock)   # idle workers wait here: a task handed off
        self._stop = threading.Event()
        self._queues: dict[str, deque[Task]] = {}
        self._turn: deque[str] = deque()           # round-robin order of jobs with queued tasks
        self._delayed: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        self._turned = clock()  # when the dispatcher last went round its loop (healthy() checks it)
        self._known: set[tuple[str, int, Stage]] = set()   # queued, delayed or running: never twice
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._idle_workers = 0
        self._handoff: deque[Task] = deque()
        self.frame_done = threading.Condition()   # notified whenever a frame becomes generated or failed
        self._rng = random.Random()

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        t = threading.Thread(target=self._dispatch_loop, name="shd-dispatch", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """Stop dispatching and tell workers to let go at their next wait; returns at once."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
            self._work_cv.notify_all()
        with self.frame_done:
            self.frame_done.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def reload(self, cfg: Config) -> None:
        """Apply live settings: concurrency, rate, retry budgets, timeouts, model inputs."""
        with self._cv:
            self.cfg = cfg
            self.limiter.set_rate(cfg.replicate.creations_per_minute)
            self._cv.notify_all()

    def in_flight(self) -> int:
        with self._cv:
            return self._in_flight

    def healthy(self) -> bool:
        """The dispatcher thread is alive and went round its loop within DISPATCH_DEADLINE (it does at least every
        5 s, so a dispatcher stuck on a lock or a call that never returns is not healthy)."""
        return (all(t.is_alive() for t in self._threads[:1])
                and self.clock() - self._turned < DISPATCH_DEADLINE)

    # --- queueing -----------------------------------------------------------------------------------------------
    def enqueue(self, task: Task, delay: float = 0.0) -> None:
        """Queue a frame's stage (ignored if that stage of that frame is already queued or running)."""
        key = (task.job_id, task.idx, task.stage)
        with self._cv:
            if key in self._known:
                return
            self._known.add(key)
            self._queue_locked(task, delay)

    def _queue_locked(self, task: Task, delay: float) -> None:
        if delay > 0:
            self._delayed.append((self.clock() + delay, next(self._seq), task))
            self._delayed.sort()
        else:
            q = self._queues.setdefault(task.job_id, deque())
            if task.stage == Stage.IMAGE:
                q.appendleft(task)
            else:
                q.append(task)
            if task.job_id not in self._turn:
                self._turn.append(task.job_id)
        self._cv.notify_all()

    def _requeue(self, task: Task, delay: float) -> None:
        with self._cv:
            self._queue_locked(task, delay)

    def drop_job(self, job_id: str) -> None:
        """Forget a job's queued tasks (it was canceled or failed); running ones notice at their next step."""
        with self._cv:
            self._queues.pop(job_id, None)
            if job_id in self._turn:
                self._turn.remove(job_id)
            self._delayed = [d for d in self._delayed if d[2].job_id != job_id]
            self._known = {k for k in self._known if k[0] != job_id}

    def queued(self, job_id: str) -> int:
        """How many of this job's tasks the engine holds (queued, delayed for a retry, or running)."""
        with self._cv:
            return sum(1 for k in self._known if k[0] == job_id)

    # --- pause on auth failure ----------------------------------------------------------------------------------
    def pause(self, reason: str) -> None:
        with self._cv:
            if self.paused is None:
                self.log.error("paused_auth_failed", reason=reason,
                               hint="fix the Replicate token (credential file or REPLICATE_API_TOKEN) "
                                    "or the account; shd resumes by itself once it is accepted")
            self.paused = reason
            self._pause_check_at = self.clock() + self.cfg.replicate.auth_recheck

    def try_resume(self) -> bool:
        """Re-read the token and ask the service whether it is accepted now; resume if it is."""
        if self.paused is None:
            return True
        if self.token_provider is not None and hasattr(self.remote, "set_token"):
            try:
                self.remote.set_token(self.token_provider())
            except ShdError as e:
                self.log.warning("token_unavailable", error=str(e))
                return False
        try:
            self.remote.check_auth()
        except AuthFailed as e:
            self.log.warning("still_paused", reason=str(e))
            return False
        except BackendError as e:
            self.log.warning("auth_check_failed", error=str(e))
            return False
        with self._cv:
            self.paused = None
            self._cv.notify_all()
        self.log.info("resumed_after_auth_fix")
        return True

    # --- dispatch -----------------------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            task = None
            with self._cv:
                now = self._turned = self.clock()
                while self._delayed and self._delayed[0][0] <= now:
                    self._queue_locked(self._delayed.pop(0)[2], 0.0)
                if self.paused is not None:
                    wait: float | None = max(0.0, self._pause_check_at - now)
                    if wait == 0.0:
                        self._pause_check_at = now + self.cfg.replicate.auth_recheck
                        threading.Thread(target=self.try_resume, name="shd-auth-check", daemon=True).start()
                        wait = self.cfg.replicate.auth_recheck
                elif self._in_flight < self.cfg.replicate.concurrency and self._turn:
                    job_id = self._turn.popleft()
                    q = self._queues[job_id]
                    task = q.popleft()
                    if q:
                        self._turn.append(job_id)
                    else:
                        del self._queues[job_id]
                    self._in_flight += 1
                    wait = None
                else:
                    wait = self._delayed[0][0] - now if self._delayed else 5.0
                if task is None:  # every change that matters notifies _cv; the timeout is only a safety net
                    self._cv.wait(timeout=min(max(wait or 0.0, 0.01), 5.0))
                    continue
                self._handoff.append(task)
                if self._idle_workers:
                    self._work_cv.notify()
                elif len(self._threads) < 2 * self.cfg.replicate.concurrency + 8:
                    w = threading.Thread(target=self._worker, name=f"shd-worker-{len(self._threads)}", daemon=True)
                    self._threads.append(w)
                    w.start()

    def _worker(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._handoff and not self._stop.is_set():
                    self._idle_workers += 1
                    self._work_cv.wait(timeout=5.0)
                    self._idle_workers -= 1
                if self._stop.is_set():
                    return
                task = self._handoff.popleft()
            self._run(task)

    def _release(self) -> None:
        with self._cv:
            self._in_flight -= 1
            self._cv.notify()

    def _run(self, task: Task) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release()

        key = (task.job_id, task.idx, task.stage)
        log = self.log.bind(job=task.job_id, frame=task.idx, stage=str(task.stage))
        requeue: tuple[Task, float] | None = None
        try:
            requeue = self._stage(task, release, log)
        except _Stopped:
            pass
        except StoreError as e:
            log.error("store_error_will_retry", error=str(e))
            requeue = (task, 10.0)
        except Exception as e:  # noqa: BLE001 - a bug must not kill the worker; the frame is retried later
            if isinstance(e, DiskFull) or diskfull.is_full(e):
                # e.g. the painted image could not be written: its prediction stays recorded, nothing is lost
                log.error("disk_full_will_retry", error=str(e), retry_in=DISK_FULL_RETRY)
                requeue = (task, DISK_FULL_RETRY)
            else:
                log.exception("stage_crashed", error=f"{type(e).__name__}: {e}")
                requeue = (task, 30.0)
        finally:
            release()
            if requeue is not None and not self._stop.is_set():
                self._requeue(*requeue)
            else:
                with self._cv:
                    self._known.discard(key)

    # --- one stage of one frame ---------------------------------------------------------------------------------
    def _stage(self, task: Task, release: Callable[[], None], log: Any) -> tuple[Task, float] | None:
        """Run (or resume) one paid stage. Returns (task, delay) to requeue, or None when the stage is settled."""
        job = self.store.job(task.job_id)
        if job.state not in (JobState.EXTRACTING, JobState.RUNNING):
            return None
        frame = self.store.frame(task.job_id, task.idx)
        before, inflight, _ = STAGE_STATES[task.stage]
        if frame.state not in (before, inflight):
            return None
        model: ImageToPrompt | PromptToImage = self.prompter if task.stage == Stage.PROMPT else self.painter
        r = self.cfg.replicate
        # A frame's first try at a stage (the common case) has no ledger history to look at.
        first = frame.state == before and task.reason == "first"
        pred = None if first else self.store.latest_prediction(task.job_id, task.idx, task.stage)
        status: Status | None = None
        try:
            if frame.state == inflight and pred is not None and (
                    pred.status in LIVE_PREDICTION or pred.status == "succeeded"):
                status = self._resume(pred, model.ref, log)
            if status is None:
                tries = 0 if first else self.store.attempts(task.job_id, task.idx, task.stage,
                                                            since=job.started_at or 0.0)
                if tries >= r.max_attempts:
                    last = pred.error if pred and pred.error else task.reason
                    self._fail_frame(task, f"{task.stage} failed after {tries} attempts: {last}", log)
                    return None
                pred, status = self._create(task, frame, model, log)
            assert pred is not None  # resumed from the ledger, or just created
            pred, status = self._poll(pred, status, log)
            release()  # the download that follows does not hold a prediction slot
            self._finish(task, job, pred, status, log)
            return None
        except BackendError as e:
            return self._failed(task, pred, e, log)

    def _resume(self, pred: Prediction, ref: str, log: Any) -> Status | None:
        """Pick up a prediction recorded by an earlier run; None if it must be created again."""
        if pred.remote_id is None:
            # The create was in flight when we stopped: it may have gone through. Look for it before paying again.
            found = self.remote.find(ref, pred.input, pred.created_at)
            if found is None:
                self.store.update_prediction(pred, status="lost", error="create interrupted; not on the server")
                log.info("interrupted_create_not_found", prediction=pred.id)
                return None
            log.info("interrupted_create_found", prediction_id=found.remote_id)
            self.store.update_prediction(pred, status=found.status, remote_id=found.remote_id)
            return found
        try:
            status = self.remote.get(pred.remote_id)
        except OutputGone as e:
            self.store.update_prediction(pred, status="lost", error=str(e))
            log.warning("prediction_vanished_recreating", prediction_id=pred.remote_id)
            return None
        if status.status == "succeeded" and status.output is None:
            self.store.update_prediction(pred, status="lost", error="output expired before it was fetched")
            log.warning("prediction_output_expired_recreating", prediction_id=pred.remote_id)
            return None
        log.info("prediction_resumed", prediction_id=pred.remote_id, status=status.status)
        return status

    def _create(self, task: Task, frame: Frame, model: ImageToPrompt | PromptToImage,
                log: Any) -> tuple[Prediction, Status]:
        seed = frame.seed
        if task.stage == Stage.PROMPT:
            assert isinstance(model, ImageToPrompt)
            inp = model.input_for(Path(frame.path))
            seed = None
        else:
            assert isinstance(model, PromptToImage) and frame.prompt is not None
            prompt = frame.prompt
            if seed is None or task.new_seed:
                base = self.cfg.replicate.seed
                seed = (base + task.idx + 7919 * task.seed_retries if base is not None
                        else self._rng.randrange(1, 2**31))
            inp = model.input_for(prompt, seed)
        self._wait_for_token()
        pred = self.store.begin_prediction(task.job_id, task.idx, task.stage, model=model.ref,
                                           input=ledger_form(inp), reason=task.reason, seed=seed,
                                           expect=FrameState(frame.state))
        log = log.bind(prediction=pred.id, attempt=pred.attempt)
        try:
            try:
                status = self.remote.create(model.ref, inp)
            except Transient as e:
                if not e.maybe_created:
                    raise
                # The request may have created (and billed) a prediction before failing: find it, don't re-send.
                log.warning("create_outcome_unknown_looking_up", error=str(e))
                found = self.remote.find(model.ref, inp, pred.created_at)
                if found is None:
                    raise
                status = found
        except BackendError as e:
            # Turned away (429/401): nothing was created. Unknown outcome: it may exist, so it stays counted.
            outcome = ("refused" if isinstance(e, (RateLimited, AuthFailed)) else
                       "lost" if isinstance(e, Transient) and e.maybe_created else "failed")
            self.store.update_prediction(pred, status=outcome, error=str(e))
            raise
        with self._cv:
            self.limiter.succeeded()
        if not self._settled_with_prompt(pred, status):
            pred = self._record(pred, status)
        log.info("prediction_created", prediction_id=status.remote_id, status=status.status)
        return pred, status

    @staticmethod
    def _settled_with_prompt(pred: Prediction, status: Status) -> bool:
        """A prompt that came back finished needs no waiting and no download: its ledger row is written in the
        same transaction as the prompt itself (one commit less per frame)."""
        return pred.stage == Stage.PROMPT and status.status == "succeeded"

    def _record(self, pred: Prediction, status: Status) -> Prediction:
        """Write what the server said; a finished prediction's error, output and predict_time with it. Not durable:
        after a power cut the prediction is found again by `_resume` (from its id, or looked up by its input)."""
        if status.terminal:
            return self.store.update_prediction(pred, status=status.status, remote_id=status.remote_id,
                                                error=status.error, output=status.output,
                                                predict_time=status.predict_time, durable=False)
        return self.store.update_prediction(pred, status=status.status, remote_id=status.remote_id, durable=False)

    def _wait_for_token(self) -> None:
        while True:
            with self._cv:
                wait = self.limiter.reserve(self.clock())
            if wait <= 0:
                return
            if self._stop.wait(wait):
                raise _Stopped

    def _poll(self, pred: Prediction, status: Status, log: Any) -> tuple[Prediction, Status]:
        r = self.cfg.replicate
        deadline = self.clock() + r.prediction_timeout
        while status.status not in ("succeeded", "failed", "canceled"):
            if status.status not in KNOWN_STATUSES:
                self.store.update_prediction(pred, status="failed", error=f"unexpected status {status.status}")
                raise Transient(f"prediction {status.remote_id} has unexpected status {status.status!r}")
            if self.clock() > deadline:
                try:
                    self.remote.cancel(status.remote_id)
                except BackendError:
                    pass
                self.store.update_prediction(pred, status="canceled", error="timed out; canceled")
                raise Transient(f"prediction {status.remote_id} took longer than {r.prediction_timeout:g}s")
            if self._stop.wait(r.poll_interval):
                raise _Stopped
            if self.store.job(pred.job_id).state == JobState.CANCELED:
                # `shd cancel` ran while this create was in flight: cancel what it created, pay no longer.
                self.remote.cancel(status.remote_id)
                self.store.update_prediction(pred, status="canceled", error="canceled by the user")
                raise _Stopped
            status = self.remote.get(status.remote_id)
            if status.status != pred.status:
                pred = self._record(pred, status)
        if status.status != pred.status and not self._settled_with_prompt(pred, status):
            pred = self._record(pred, status)
        log.debug("prediction_finished", prediction_id=status.remote_id, status=status.status,
                  predict_time=status.predict_time)
        return pred, status

    def _finish(self, task: Task, job: Job, pred: Prediction, status: Status, log: Any) -> None:
        if status.status == "failed":
            raise model_failure(status.error)
        if status.status == "canceled":
            if self.store.job(task.job_id).state == JobState.CANCELED:
                raise _Stopped
            raise Transient(f"prediction {status.remote_id} was canceled on the server")
        if task.stage == Stage.PROMPT:
            unrecorded = pred.status != status.status or pred.remote_id != status.remote_id
            try:
                prompt = self.prompter.result(status)
            except BackendError:
                if unrecorded:
                    self._record(pred, status)
                raise
            with self.store.tx(durable=False):  # a prompt lost to a power cut is resumed from the ledger
                if unrecorded:
                    self._record(pred, status)
                self.store.transition_frame(task.job_id, task.idx, FrameState.PROMPTED, prompt=prompt,
                                            expect=FrameState.PROMPTING, durable=False)
            log.info("frame_prompted", prompt=prompt[:120])
            self.enqueue(Task(task.job_id, task.idx, Stage.IMAGE))
            return
        data = self.painter.result(status)
        suffix = image_suffix(data)
        if suffix is None:
            raise Transient(f"prediction {status.remote_id}: downloaded output is not an image")
        out = Path(job.work_dir) / "generated" / f"{task.idx:06d}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, data)
        self.store.transition_frame(task.job_id, task.idx, FrameState.GENERATED, image_path=out,
                                    expect=FrameState.GENERATING, durable=False)
        log.info("frame_generated", path=str(out))
        self._notify_frame()

    # --- failures -----------------------------------------------------------------------------------------------
    def _failed(self, task: Task, pred: Prediction | None, err: BackendError, log: Any) -> tuple[Task, float] | None:
        r = self.cfg.replicate
        if pred is not None and pred.remote_id is not None and isinstance(err, OutputGone):
            self.store.update_prediction(pred.id, status="lost", error=str(err))  # re-read: a poll may have moved it
        # Any other failure of a prediction that has an id (a poll that hit 5xx/429/401, a download that broke)
        # leaves its ledger row as it is: the retry resumes that same prediction instead of paying again.
        if isinstance(err, RateLimited):
            with self._cv:
                self.limiter.throttled(self.clock(), err.retry_after)
            log.warning("rate_limited", retry_after=err.retry_after,
                        rate_per_minute=round(self.limiter.rate_per_minute, 1))
            return replace(task, reason=str(err)), err.retry_after if err.retry_after is not None else 1.0
        if isinstance(err, AuthFailed):
            self.pause(str(err))
            return replace(task, reason=str(err)), 0.0
        if isinstance(err, ModelFailed) and err.retry_with_new_seed and task.seed_retries < r.model_retries:
            log.warning("model_failed_retrying_new_seed", error=str(err), retry=task.seed_retries + 1)
            return replace(task, reason=f"new seed after: {err}", new_seed=True,
                           seed_retries=task.seed_retries + 1), 0.0
        if isinstance(err, (ModelFailed, Rejected)):
            self._fail_frame(task, str(err), log)
            return None
        # Transient (and OutputGone): retry after a backoff; the attempt budget is checked before the next create.
        attempt = pred.attempt if pred is not None else 1
        delay = 0.0 if isinstance(err, OutputGone) else backoff(attempt, base=r.backoff_base, cap=r.backoff_max)
        if isinstance(err, Transient) and err.retry_after is not None:
            delay = max(delay, err.retry_after)
        log.warning("stage_failed_retrying", error=str(err), retry_in=round(delay, 2))
        return replace(task, reason=str(err)), delay

    def _fail_frame(self, task: Task, reason: str, log: Any) -> None:
        self.store.transition_frame(task.job_id, task.idx, FrameState.FAILED, error=reason)
        log.warning("frame_failed", reason=reason)
        self._notify_frame()

    def _notify_frame(self) -> None:
        with self.frame_done:
            self.frame_done.notify_all()

"""One task, start to end: resume the stage's prediction from the ledger, or take a result already paid for
(reuse.py), or pay for a new one once the budget admits it (budget_gate.py); wait for it, keep its result; on a
failure, ask the retry policy (retry.py) what follows and do it. Any stage (stages.py) runs the same way, so every
create of every stage, retries included, passes the reuse lookup and the budget check first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from shd.backends.base import Remote, Status
from shd.config import Config
from shd.errors import BackendError, Transient
from shd.scheduler import retry
from shd.scheduler.budget_gate import BudgetGate, Held
from shd.scheduler.creation_limit import CreationLimit
from shd.scheduler.dispatch import Requeue, Stopped, Task
from shd.scheduler.outage import Outage
from shd.scheduler.paid_call import PaidCalls
from shd.scheduler.pause import AuthPause
from shd.scheduler.reuse import Found, Lookup, Reuse, Wait
from shd.scheduler.stages import PaidStage
from shd.states import STAGE_STATES, JobState, Stage
from shd.store import LIVE_PREDICTION, Job, Prediction, Store

REUSE_WAIT = 30.0  # seconds a task waits for another's prediction of the same result (it is woken when that ends)


class StageRunner:
    """Runs one task at a time per calling thread; shared by all workers."""

    def __init__(self, store: Store, remote: Remote, stages: Mapping[Stage, PaidStage[Any]], calls: PaidCalls, *,
                 limit: CreationLimit, pause: AuthPause, outage: Outage, enqueue: Callable[[Task], None],
                 frame_done: threading.Condition, settings: Callable[[], Config], budget: BudgetGate, reuse: Reuse):
        self.store = store
        self.remote = remote
        self.stages = stages
        self.calls = calls
        self.budget = budget
        self.reuse = reuse
        self.limit = limit
        self.pause = pause
        self.outage = outage
        self.enqueue = enqueue
        self.frame_done = frame_done
        self.settings = settings

    def run(self, task: Task, release: Callable[[], None], log: Any) -> Requeue:
        """Run (or resume) one paid stage. Returns (task, delay) to run it again, or None when it is settled.
        `release` gives the task's slot back: the download that follows a finished prediction holds none."""
        job = self.store.job(task.job_id)
        if job.state not in (JobState.EXTRACTING, JobState.RUNNING):
            return None
        stage = self.stages[task.stage]
        item = stage.item(task)  # the frame, or the pair of paintings for FILM
        before, inflight, _ = STAGE_STATES[task.stage]
        if item.state not in (before, inflight):
            return None
        # A frame's first try at a stage (the common case) has no ledger history to look at.
        first = item.state == before and task.reason == "first"
        pred = None if first else self.store.latest_prediction(task.job_id, task.idx, task.stage)
        owned: Lookup | None = None   # the key this task pays for (or resumes): its waiters wake when it ends
        try:
            status: Status | None = None
            if item.state == inflight and pred is not None and (
                    pred.status in LIVE_PREDICTION or pred.status == "succeeded"):
                self.budget.track(task.key, job.id, pred.model)
                status = self.calls.resume(pred, log)
                owned = Lookup(pred.reuse_key) if status is not None and pred.reuse_key else None
            if status is None:
                if not first:
                    history = self._history(task, job, pred)
                    why = retry.attempts_exhausted(task.stage, history, self.settings().replicate)
                    if why is not None:
                        self._fail(stage, task, why, log)
                        return None
                seed = stage.seed_for(item, task)
                lookup = stage.lookup(job, item, seed)
                if lookup.active:
                    got = self.reuse.find_or_claim(lookup, task.key, stage.available)
                    if isinstance(got, Found):
                        self._follow(stage, stage.reuse(task, job, got.source, log))
                        return None
                    if isinstance(got, Wait):
                        return task, REUSE_WAIT
                    owned = lookup
                self.budget.admit(job, task.key, stage.ref)
                pred, status = self.calls.create(task, stage.ref, stage.input_for(job, item, seed), seed=seed,
                                                 state=item.state, reuse_key=lookup.key,
                                                 defer_success=stage.settles_with_result, log=log)
            self.outage.reached()
            assert pred is not None  # resumed from the ledger, or just created
            pred, status = self.calls.poll(pred, status, defer_success=stage.settles_with_result, log=log)
            release()
            self._keep(task, job, stage, pred, status, log)
            return None
        except Held as held:
            return task, held.retry_in
        except BackendError as e:
            return self._failed(stage, task, job, pred, e, log)
        finally:
            self.budget.release(task.key)
            if owned is not None:
                self.reuse.release(owned, task.key)

    def _keep(self, task: Task, job: Job, stage: PaidStage[Any], pred: Prediction, status: Status, log: Any) -> None:
        if status.status == "failed":
            raise self.remote.failure(status)
        if status.status == "canceled":
            if self.store.job(task.job_id).state == JobState.CANCELED:
                raise Stopped
            raise Transient(f"prediction {status.remote_id} was canceled on the server")
        unrecorded = pred.status != status.status or pred.remote_id != status.remote_id
        self._follow(stage, stage.keep(task, job, status, (lambda: self.calls.record(pred, status))
                                       if unrecorded else None, log))

    def _follow(self, stage: PaidStage[Any], tasks: list[Task]) -> None:
        """A stage's result is kept: queue what follows it, and tell the job when its frame (or pair) is done."""
        for t in tasks:
            self.enqueue(t)
        if stage.finishes_item:
            self._notify_frame()

    def _history(self, task: Task, job: Job, pred: Prediction | None) -> retry.History:
        rows = self.store.attempts(task.job_id, task.idx, task.stage, since=job.started_at or 0.0)
        last_error = pred.error if pred and pred.error else task.reason
        return retry.History(tuple(p.status for p in rows), last_error=last_error, new_seeds=task.seed_retries,
                             streak=task.streak)

    def _failed(self, stage: PaidStage[Any], task: Task, job: Job, pred: Prediction | None, err: BackendError,
                log: Any) -> Requeue:
        """Do what the retry policy says about `err`."""
        self.calls.lost(pred, err)
        decision = retry.decide(err, self._history(task, job, pred), self.settings().replicate)
        if isinstance(decision, retry.Pause):
            self.pause.pause(decision.why)
            return replace(task, reason=decision.why), 0.0
        if isinstance(decision, retry.WaitForService):  # held with every other task until the API answers
            self.outage.failed(decision.why)
            return replace(task, reason=decision.why), 0.0
        if isinstance(decision, retry.FailFrame):
            self._fail(stage, task, decision.why, log)
            return None
        if decision.slow_down:
            rate = self.limit.throttled(decision.after)
            log.warning("rate_limited", retry_after=decision.after, rate_per_minute=round(rate, 1))
        elif decision.new_seed:
            log.warning("model_failed_retrying_new_seed", error=str(err), retry=task.seed_retries + 1)
            return replace(task, reason=decision.why, new_seed=True, seed_retries=task.seed_retries + 1), decision.after
        else:
            log.warning("stage_failed_retrying", error=str(err), retry_in=round(decision.after, 2))
            return replace(task, reason=decision.why, streak=task.streak + 1), decision.after
        return replace(task, reason=decision.why), decision.after

    def _fail(self, stage: PaidStage[Any], task: Task, reason: str, log: Any) -> None:
        stage.fail(task, reason)
        log.warning("pair_failed" if task.stage == Stage.FILM else "frame_failed", reason=reason)
        self._notify_frame()

    def _notify_frame(self) -> None:
        with self.frame_done:
            self.frame_done.notify_all()

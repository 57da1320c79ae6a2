"""One paid prediction against the ledger: nothing is paid for twice, nothing paid for is lost.

- Recorded before it is sent: `create` writes the ledger row (durably, `store.begin_prediction`) before the
  request goes out, and the prediction's id the moment the answer brings it.
- A create whose answer was lost (`Transient.maybe_created`) is looked up on the server (`Remote.find`) before
  anything is sent again; one that was turned away is recorded as such (`retry.create_outcome`).
- Resumed from the ledger: after a crash, `resume` polls a recorded id instead of creating again, and looks up a
  create that was in flight without an id; a prediction that vanished, or whose output expired, is marked `lost`
  and created again (and recorded again).
- Polled with shd's own deadline (`replicate.prediction_timeout`): past it the prediction is canceled and the stage
  retried (a cancel that fails leaves it live: the retry resumes it, paying for no second one while it runs). A
  job canceled meanwhile (`shd cancel`) cancels it on the server at once, also when the cancel came while the
  create was still in flight; the ledger then records how it ended on the server (`settle_cancel`: canceled, or
  succeeded if it finished first and is billed), never leaving a row `processing` unless the cancel could not reach
  the server (then the row stays live, for the next `shd cancel`).
- Priced when it finishes: succeeded, failed or canceled, its `predict_time` x the model's price in force then
  (`pricing.cost`) is recorded with it, and reported (`on_cost`, the budget's running totals). A prediction shd
  cancels is read once more after the cancel, for the time it ran.
Smaller steps (an id, a status) are committed without an fsync: after a power cut the prediction is found again
by `resume`, from its id or by its input.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from shd import pricing, testpoints
from shd.backends.base import Remote, Status, ledger_form
from shd.config import Config
from shd.errors import BackendError, OutputGone, Transient
from shd.scheduler import retry
from shd.scheduler.creation_limit import CreationLimit
from shd.scheduler.dispatch import Stopped, Task
from shd.states import JobState
from shd.store import Prediction, Store

KNOWN_STATUSES = ("starting", "processing", "succeeded", "failed", "canceled")
SETTLE_WAIT = 5.0  # seconds a cancel waits for the server to say how the prediction ended


def price_of(prices: Mapping[str, pricing.Price], model: str, status: Status) -> float | None:
    """What a finished prediction cost (its predict_time at the model's price in force), None if the server did
    not say how long it ran."""
    if status.predict_time is None:
        return None
    price = pricing.price_for(prices, model) or pricing.Price()
    return pricing.cost(price, status.predict_time, pricing.outputs_of(status.output))


def settle_cancel(store: Store, remote: Remote, pred: Prediction, remote_id: str, log: Any, *,
                  sleep: Callable[[float], object], poll_interval: float, prices: Mapping[str, pricing.Price],
                  on_cost: Callable[[Prediction, float], None] = lambda pred, usd: None) -> str | None:
    """Cancel a prediction of a canceled job on the server and record how it ended there (canceled, or succeeded if
    it finished first), priced for the time it ran (it is billed); a server that does not say within SETTLE_WAIT
    leaves it recorded `canceled`. Returns the status recorded; None when the cancel itself failed: the prediction
    runs on (and is billed), so it stays live in the ledger, with its id, for the next `shd cancel`."""
    try:
        remote.cancel(remote_id)
    except BackendError as e:
        log.warning("cancel_failed", prediction_id=remote_id, error=str(e))
        store.update_prediction(pred.id, status="starting" if pred.status == "creating" else pred.status,
                                remote_id=remote_id, error=f"cancel failed: {e}")
        return None
    status: Status | None = None
    try:
        status = remote.get(remote_id)
        waited = 0.0
        while not status.terminal and waited < SETTLE_WAIT:
            sleep(poll_interval)
            waited += poll_interval
            status = remote.get(remote_id)
    except BackendError as e:
        log.warning("cancel_unconfirmed", prediction_id=remote_id, error=str(e))
    final = status.status if status is not None and status.terminal else "canceled"
    usd = price_of(prices, pred.model, status) if status is not None and status.terminal else None
    store.update_prediction(pred.id, status=final, remote_id=remote_id, error="canceled by the user",
                            output=status.output if status is not None and final == "succeeded" else None,
                            predict_time=status.predict_time if status is not None else None, cost_usd=usd)
    if usd is not None and pred.cost_usd is None:
        on_cost(pred, usd)
    log.info("prediction_canceled", prediction_id=remote_id, status=final)
    return final


class PaidCalls:
    """Create, record, resume and poll predictions for the stage runner. Thread-safe (the store and remote are)."""

    def __init__(self, store: Store, remote: Remote, limit: CreationLimit, *, settings: Callable[[], Config],
                 stop: threading.Event, clock: Callable[[], float],
                 on_cost: Callable[[Prediction, float], None] = lambda pred, usd: None):
        self.store = store
        self.remote = remote
        self.limit = limit
        self.settings = settings
        self.on_cost = on_cost
        self._stop = stop
        self._clock = clock

    def resume(self, pred: Prediction, log: Any) -> Status | None:
        """Pick up a prediction recorded by an earlier run; None if it must be created again."""
        if pred.remote_id is None:
            # The create was in flight when we stopped: it may have gone through. Look for it before paying again.
            found = self.remote.find(pred.model, pred.input, pred.created_at)
            if found is None:
                self.store.update_prediction(pred, status=retry.LOST, error="create interrupted; not on the server")
                log.info("interrupted_create_not_found", prediction=pred.id)
                return None
            log.info("interrupted_create_found", prediction_id=found.remote_id)
            self.store.update_prediction(pred, status=found.status, remote_id=found.remote_id)
            return found
        try:
            status = self.remote.get(pred.remote_id)
        except OutputGone as e:
            self.store.update_prediction(pred, status=retry.LOST, error=str(e))
            log.warning("prediction_vanished_recreating", prediction_id=pred.remote_id)
            return None
        if status.status == "succeeded" and status.output is None:
            self.store.update_prediction(pred, status=retry.LOST, error="output expired before it was fetched")
            log.warning("prediction_output_expired_recreating", prediction_id=pred.remote_id)
            return None
        log.info("prediction_resumed", prediction_id=pred.remote_id, status=status.status)
        return status

    def create(self, task: Task, ref: str, inp: dict[str, Any], *, seed: int | None, state: str,
               defer_success: bool, log: Any, reuse_key: str | None = None) -> tuple[Prediction, Status]:
        """Send one paid create, recorded first (with the content key of its result, `reuse_key`); `state`: that of
        the frame (or pair) as the caller read it. The budget has admitted it (budget_gate.py). `defer_success`: a
        create that comes back succeeded is left for the caller to record together with its result."""
        self.limit.wait()
        pred = self.store.begin_prediction(task.job_id, task.idx, task.stage, model=ref, input=ledger_form(inp),
                                           reason=task.reason, seed=seed, expect=state, reuse_key=reuse_key)
        testpoints.reached("ledger-written")
        log = log.bind(prediction=pred.id, attempt=pred.attempt)
        try:
            try:
                status = self.remote.create(ref, inp)
                testpoints.reached("create-answered")
            except Transient as e:
                if not e.maybe_created:
                    raise
                # The request may have created (and billed) a prediction before failing: find it, don't re-send.
                log.warning("create_outcome_unknown_looking_up", error=str(e))
                try:
                    found = self.remote.find(ref, inp, pred.created_at)
                except BackendError:
                    raise e from None  # the create's own outcome is what the ledger keeps: maybe created (lost)
                if found is None:
                    raise
                status = found
        except BackendError as e:
            self.store.update_prediction(pred, status=retry.create_outcome(e), error=str(e))
            raise
        self.limit.succeeded()
        if self.store.job(task.job_id).state == JobState.CANCELED:
            # `shd cancel` ran while this create was in flight: cancel what it created at once, pay no longer.
            self._settle(pred, status.remote_id, log)
            raise Stopped
        if not (defer_success and status.status == "succeeded"):
            pred = self.record(pred, status)
        log.info("prediction_created", prediction_id=status.remote_id, status=status.status)
        return pred, status

    def _settle(self, pred: Prediction, remote_id: str, log: Any) -> None:
        settle_cancel(self.store, self.remote, pred, remote_id, log, sleep=self._stop.wait,
                      poll_interval=self.settings().replicate.poll_interval, prices=self.settings().prices,
                      on_cost=self.on_cost)

    def record(self, pred: Prediction, status: Status, error: str | None = None) -> Prediction:
        """Write what the server said; a finished prediction's error, output, predict_time and cost with it. Not
        durable: after a power cut the prediction is found again by `resume` (from its id, or looked up by its
        input), and priced then."""
        if not status.terminal:
            return self.store.update_prediction(pred, status=status.status, remote_id=status.remote_id, durable=False)
        usd = price_of(self.settings().prices, pred.model, status)
        recorded = self.store.update_prediction(pred, status=status.status, remote_id=status.remote_id,
                                                error=error or status.error, output=status.output,
                                                predict_time=status.predict_time, cost_usd=usd, durable=False)
        if usd is not None and pred.cost_usd is None:
            self.on_cost(pred, usd)
        return recorded

    def _canceled(self, pred: Prediction, remote_id: str, why: str) -> None:
        """Record a prediction shd has just canceled, with the time it ran if the server says (it is billed)."""
        final = None
        with contextlib.suppress(BackendError):
            final = self.remote.get(remote_id)
        if final is not None and final.terminal:  # it may have finished meanwhile: then its result is resumed
            self.record(pred, final, error=None if final.status == "succeeded" else why)
        else:
            self.store.update_prediction(pred, status="canceled", error=why)

    def poll(self, pred: Prediction, status: Status, *, defer_success: bool, log: Any) -> tuple[Prediction, Status]:
        """Wait until the prediction is finished (succeeded, failed or canceled), recording each change of status."""
        r = self.settings().replicate
        deadline = self._clock() + r.prediction_timeout
        while not status.terminal:
            if status.status not in KNOWN_STATUSES:
                self.store.update_prediction(pred, status="failed", error=f"unexpected status {status.status}")
                raise Transient(f"prediction {status.remote_id} has unexpected status {status.status!r}")
            if self._clock() > deadline:
                try:
                    self.remote.cancel(status.remote_id)
                except BackendError as e:
                    # Not canceled: it runs on, and is billed. Its row stays live, so the retry resumes this same
                    # prediction (its result is used if it comes; the cancel is tried again at the next deadline)
                    # instead of paying for a second one while the first still runs.
                    log.warning("timeout_cancel_failed", prediction_id=status.remote_id, error=str(e))
                    raise Transient(f"prediction {status.remote_id} took longer than {r.prediction_timeout:g}s and "
                                    f"its cancel failed ({e}); it is resumed") from e
                self._canceled(pred, status.remote_id, "timed out; canceled")
                raise Transient(f"prediction {status.remote_id} took longer than {r.prediction_timeout:g}s")
            if self._stop.wait(r.poll_interval):
                raise Stopped
            if self.store.job(pred.job_id).state == JobState.CANCELED:
                self._settle(pred, status.remote_id, log)  # `shd cancel` ran meanwhile: pay no longer
                raise Stopped
            status = self.remote.get(status.remote_id)
            if status.status != pred.status:
                pred = self.record(pred, status)
        if status.status != pred.status and not (defer_success and status.status == "succeeded"):
            pred = self.record(pred, status)
        log.debug("prediction_finished", prediction_id=status.remote_id, status=status.status,
                  predict_time=status.predict_time)
        return pred, status

    def lost(self, pred: Prediction | None, error: BackendError) -> None:
        """A stage failed: a recorded prediction whose output is gone is marked lost (it will be created again).
        Any other failure of a prediction with an id (a poll that hit 5xx/429/401, a download that broke) leaves its
        row as it is: the retry resumes that same prediction instead of paying again."""
        if pred is not None and pred.remote_id is not None and isinstance(error, OutputGone):
            self.store.update_prediction(pred.id, status=retry.LOST, error=str(error))  # re-read: a poll moved it

"""The engine: every frame's paid stages (and each pair's, with FILM), across jobs, with at most
`replicate.concurrency` predictions in flight.

It wires the parts, each in a module of its own, and is what the pipeline and the service talk to:

    dispatch.py        fair queues across jobs, the slots, the worker threads, delayed retries
    runner.py          one task: resume, reuse or create, poll, keep the result; failures through the retry policy
    stages.py          what each paid stage sends and keeps (prompt, image)
    film_stage.py      the FILM stage: a pair of consecutive paintings -> the pictures between them
    reuse.py           results already paid for, found by content; one payer per result in flight
    budget_gate.py     the budget check before every create; held tasks
    paid_call.py       one prediction against the ledger: recorded before it is sent, resumed, looked up, polled
    retry.py           PURE: what follows a failure, and how many paid attempts a frame gets
    creation_limit.py  the client-side creation rate, slowed by 429s
    pause.py           the pause on a refused token, and the resume
    outage.py          the API outage: every task held, one shared growing backoff, one probe at a time
    holds.py           every reason to hold work (auth, outage, budget) as one gate and one reason
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from shd.backends.base import Backend
from shd.config import Config
from shd.scheduler.budget_gate import BudgetGate
from shd.scheduler.creation_limit import CreationLimit
from shd.scheduler.dispatch import Dispatcher, Task
from shd.scheduler.holds import Holds, Paused
from shd.scheduler.outage import Outage
from shd.scheduler.paid_call import PaidCalls
from shd.scheduler.pause import AuthPause
from shd.scheduler.reuse import Reuse
from shd.scheduler.runner import StageRunner
from shd.scheduler.film_stage import CountFrames, FilmStage, ToPng
from shd.scheduler.stages import FitPicture, ImageStage, PaidStage, PromptStage
from shd.states import Stage
from shd.store import Store


class Engine:
    """Runs the paid stages of every enqueued frame. Thread-safe; `start()` it, `enqueue()` work, `stop()` it."""

    def __init__(self, cfg: Config, store: Store, backend: Backend, *,
                 token_provider: Callable[[], str] | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, fit_picture: FitPicture | None = None,
                 to_png: ToPng | None = None, count_frames: CountFrames | None = None):
        self.cfg = cfg
        self.store = store
        self.frame_done = threading.Condition()   # notified whenever a frame becomes generated or failed
        self._stop = threading.Event()
        self._at_work: dict[str, int] = {}  # job id -> how many of its runs are at work here (work_on)
        self._at_work_lock = threading.Lock()
        r = cfg.replicate
        self.auth = AuthPause(backend.remote, recheck=r.auth_recheck, clock=clock, on_change=self._wake,
                              token_provider=token_provider)
        self.outage = Outage(backoff_base=r.backoff_base, backoff_max=r.backoff_max, clock=clock,
                             on_change=self._wake)
        settings = self._settings
        # The budget is checked per create (`admit`); as a hold it gives its reason with the others'.
        self.budget = BudgetGate(store, settings, lambda keys: self.dispatch.expedite(keys), wall=wall)
        self.holds = Holds([self.auth, self.outage, self.budget])
        self.limit = CreationLimit(r.creations_per_minute, stop=self._stop, clock=clock)
        self.dispatch = Dispatcher(lambda task, release, log: self.runner.run(task, release, log),
                                   concurrency=r.concurrency, gate=self.holds, stop=self._stop, clock=clock)
        calls = PaidCalls(store, backend.remote, self.limit, settings=settings, stop=self._stop, clock=clock,
                          on_cost=self.budget.spent)
        film = FilmStage(store, backend.interpolator, settings, to_png=to_png, count_frames=count_frames)
        stages: dict[Stage, PaidStage[Any]] = {
            Stage.PROMPT: PromptStage(store, backend.prompter, settings),
            Stage.IMAGE: ImageStage(store, backend.painter, settings, fit_picture, painted=film.ready),
            Stage.FILM: film}
        self.runner = StageRunner(store, backend.remote, stages, calls, limit=self.limit, pause=self.auth,
                                  outage=self.outage, enqueue=self.dispatch.enqueue, frame_done=self.frame_done,
                                  settings=settings, budget=self.budget,
                                  reuse=Reuse(store, self.dispatch.expedite, self.at_work))

    def _settings(self) -> Config:
        return self.cfg

    def _wake(self) -> None:
        """A hold began or ended: the dispatcher looks again, and so do jobs waiting for frames."""
        self.dispatch.wake()
        with self.frame_done:
            self.frame_done.notify_all()

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.store.clear_held()  # every hold is checked afresh before the next create
        self.dispatch.start()

    def stop(self) -> None:
        """Stop dispatching and tell workers to let go at their next wait; returns at once."""
        self.dispatch.stop()
        with self.frame_done:
            self.frame_done.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def reload(self, cfg: Config) -> None:
        """Apply live settings: concurrency, rate, retry budgets and backoff, the poll interval and prediction timeout,
        the seed, reuse, prices and budget (held tasks look again at once); the service keeps what is built at start
        (service/reload.py: RESTART_ONLY)."""
        self.cfg = cfg
        self.auth.recheck = cfg.replicate.auth_recheck
        self.outage.backoff_base, self.outage.backoff_max = cfg.replicate.backoff_base, cfg.replicate.backoff_max
        self.limit.set_rate(cfg.replicate.creations_per_minute)
        self.dispatch.set_concurrency(cfg.replicate.concurrency)
        self.budget.reload()

    def in_flight(self) -> int:
        return self.dispatch.in_flight()

    def healthy(self) -> bool:
        return self.dispatch.healthy()

    # --- work ---------------------------------------------------------------------------------------------------
    def enqueue(self, task: Task, delay: float = 0.0) -> None:
        """Queue a frame's stage (ignored if that stage of that frame is already queued or running)."""
        self.dispatch.enqueue(task, delay)

    def drop_job(self, job_id: str) -> None:
        """Forget a job's queued tasks (it was canceled or failed); running ones notice at their next step."""
        self.dispatch.drop_job(job_id)

    def work_on(self, job_id: str) -> None:
        """A job is being run in this process (pipeline.JobRunner, from before its thread starts): its predictions
        in flight will be resumed here, so a task with the same content key waits for them (reuse.py)."""
        with self._at_work_lock:
            self._at_work[job_id] = self._at_work.get(job_id, 0) + 1

    def done_with(self, job_id: str) -> None:
        """One `work_on` of the job has ended."""
        with self._at_work_lock:
            left = self._at_work.pop(job_id, 0) - 1
            if left > 0:
                self._at_work[job_id] = left

    def at_work(self, task: tuple[str, int, str]) -> bool:
        """Whether this process will resume `task`'s prediction: its job is run here, or the task is held."""
        with self._at_work_lock:
            if task[0] in self._at_work:
                return True
        return self.dispatch.holds(task)

    def queued(self, job_id: str) -> int:
        """How many of this job's tasks the engine holds (queued, delayed for a retry, or running)."""
        return self.dispatch.queued(job_id)

    # --- holds: the auth pause, the API outage, the budget ------------------------------------------------------
    @property
    def paused(self) -> str | None:
        """Why no predictions are created now (the credentials were refused, the API cannot be reached, a daily or
        monthly budget is spent), or None."""
        return self.holds.paused

    def paused_by(self) -> list[Paused]:
        """Each hold in force: its kind, its reason and since when."""
        return self.holds.current()

    def try_resume(self) -> bool:
        """Re-read the token and check it now; resume all work if it is accepted."""
        return self.auth.try_resume()

"""What every step of a job works with, and the two ways a step stops a job short.

`JobContext` holds the config in force (a reload replaces it: each step reads it when it needs it), the store, the
engine and ffmpeg, and what `shd process` asks along the way (`give_up`, `on_estimate`); the runner is one.
"""

from __future__ import annotations

from collections.abc import Callable

from shd import pricing
from shd.config import Config
from shd.errors import ShdError
from shd.scheduler import Engine
from shd.states import JobState
from shd.store import Job, Store


class JobInterrupted(Exception):
    """Raised when the engine stops while a job is being worked on; its state stays resumable."""


class JobLeft(Exception):
    """Raised when the runner's `give_up` says to stop waiting (`shd process`: a refused token, an API unreachable
    for too long); the job stays recorded and resumable, and `deferred` says why."""

    def __init__(self, why: ShdError):
        self.why = why
        super().__init__(str(why))


class JobContext:
    """The parts a job's steps use (extraction.py, painting.py, assembly.py, publishing.py)."""

    def __init__(self, cfg: Config, store: Store, engine: Engine, ffmpeg: str):
        self.cfg = cfg
        self.store = store
        self.engine = engine
        self.ffmpeg = ffmpeg
        # Asked while a job waits (`shd process` sets it): an error to stop waiting with, the job kept; None: wait on.
        # `shd process` ends so when the credentials are refused, the API is unreachable too long, or the job is held
        # by a budget cap with nothing of it in flight (errors.BudgetHeld).
        self.give_up: Callable[[], ShdError | None] = lambda: None
        # `shd process`: told the estimate before anything is paid.
        self.on_estimate: Callable[[Job, pricing.Estimate], None] | None = None

    def gone(self, job_id: str) -> bool:
        return self.store.job(job_id).state in (JobState.CANCELED, JobState.FAILED)

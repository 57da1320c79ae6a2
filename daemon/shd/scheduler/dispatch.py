"""Dispatch: which queued task runs next, and on which thread.

- Fair: each job has a queue of its own and the jobs take turns (round-robin), so a long video never starves a short
  one. Within a job, a frame's later stages go first, so frames finish while others are still being prompted.
- Bounded: at most `concurrency` tasks hold a slot at once. A task may give its slot back before it ends
  (`release`), as a download does once its prediction has finished.
- Never twice: a (job, frame, stage) that is queued, waiting for a retry, or running is not queued again.
- A retry waits in a timer queue until it is due (or until `expedite` makes it due: the result it waits for is
  ready, the budget it waits for was raised); nothing is handed out while the gate (the auth pause) is closed.
- Never lost: a task that raises is queued again (a database error after `STORE_RETRY` s, a full disk after
  `DISK_FULL_RETRY` s, a bug after `CRASH_RETRY` s, with its traceback logged); the worker goes on.
- Watched: `healthy()` is true only while the dispatching thread goes round its loop (at least every `IDLE_WAKE` s),
  so the daemon's watchdog ping does not vouch for a dispatcher that is alive but stuck.
- Worker threads are started as needed (up to 2 x concurrency + 8) and reused. They are daemons: on `stop` nothing
  waits for a prediction (the ledger lets the next start resume it).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from shd import diskfull, logs
from shd.errors import DiskFull, StoreError
from shd.states import Stage

STORE_RETRY = 10.0
DISK_FULL_RETRY = 30.0
CRASH_RETRY = 30.0
IDLE_WAKE = 5.0  # every change that matters notifies; this timeout is only a safety net
TURN_DEADLINE = 60.0  # a dispatching thread that has not gone round its loop for this long is stuck


@dataclass(frozen=True)
class Task:
    """One paid stage of one frame, and why it runs (the first try, or the error that made it a retry)."""

    job_id: str
    idx: int
    stage: Stage
    reason: str = "first"
    new_seed: bool = False
    seed_retries: int = 0
    streak: int = 0   # transient failures in a row (its backoff grows with them)

    @property
    def key(self) -> tuple[str, int, Stage]:
        return self.job_id, self.idx, self.stage


class Stopped(Exception):
    """Raised inside a task when the engine stops (or its job was canceled); its prediction stays recorded."""


Requeue = tuple[Task, float] | None   # run this task again after so many seconds, or nothing more to do
Run = Callable[[Task, Callable[[], None], Any], Requeue]   # (task, release its slot, bound logger)


class Gate(Protocol):
    def hold(self, now: float) -> float | None:
        """None while tasks may be handed out; else how many seconds to hold them before asking again."""


class Dispatcher:
    """Hands queued tasks to worker threads. Thread-safe; `start()` it, `enqueue()` work, `stop()` it."""

    def __init__(self, run: Run, *, concurrency: int, gate: Gate, stop: threading.Event, clock: Callable[[], float]):
        self.run = run
        self.concurrency = concurrency
        self.gate = gate
        self.clock = clock
        self.log = logs.get()
        self._stop = stop
        lock = threading.Lock()
        self._cv = threading.Condition(lock)        # the dispatcher waits here: work queued, a slot freed
        self._work_cv = threading.Condition(lock)   # idle workers wait here: a task handed off
        self._queues: dict[str, deque[Task]] = {}
        self._turn: deque[str] = deque()            # round-robin order of jobs with queued tasks
        self._delayed: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        self._known: set[tuple[str, int, Stage]] = set()   # queued, delayed or running: never twice
        self._due: set[tuple[str, int, str]] = set()        # expedited while running: not delayed when requeued
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._idle_workers = 0
        self._handoff: deque[Task] = deque()
        self._turned = clock()  # when the dispatching thread last went round its loop

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

    def healthy(self) -> bool:
        """The dispatching thread is alive and went round its loop within TURN_DEADLINE."""
        return all(t.is_alive() for t in self._threads[:1]) and self.clock() - self._turned < TURN_DEADLINE

    def set_concurrency(self, concurrency: int) -> None:
        with self._cv:
            self.concurrency = concurrency
            self._cv.notify_all()

    def wake(self) -> None:
        """Look again now (the gate opened)."""
        with self._cv:
            self._cv.notify_all()

    def in_flight(self) -> int:
        with self._cv:
            return self._in_flight

    # --- queueing -----------------------------------------------------------------------------------------------
    def enqueue(self, task: Task, delay: float = 0.0) -> None:
        """Queue a frame's stage (ignored if that stage of that frame is already queued or running)."""
        with self._cv:
            if task.key in self._known:
                return
            self._known.add(task.key)
            self._queue_locked(task, delay)

    def _queue_locked(self, task: Task, delay: float) -> None:
        if task.key in self._due:
            self._due.discard(task.key)
            delay = 0.0
        if delay > 0:
            self._delayed.append((self.clock() + delay, next(self._seq), task))
            self._delayed.sort()
        else:
            q = self._queues.setdefault(task.job_id, deque())
            if task.stage == Stage.PROMPT:
                q.append(task)
            else:  # a later stage: it finishes a frame
                q.appendleft(task)
            if task.job_id not in self._turn:
                self._turn.append(task.job_id)
        self._cv.notify_all()

    def expedite(self, keys: Iterable[tuple[str, int, str]]) -> None:
        """Make these waiting tasks due now; one still running is not delayed when it asks to wait."""
        wanted = set(keys)
        if not wanted:
            return
        with self._cv:
            now = self.clock()
            delayed = {t.key for _, _, t in self._delayed}
            self._delayed = sorted((min(at, now) if t.key in wanted else at, seq, t) for at, seq, t in self._delayed)
            self._due |= {k for k in wanted - delayed if k in self._known}
            self._cv.notify_all()

    def drop_job(self, job_id: str) -> None:
        """Forget a job's queued tasks (it was canceled or failed); running ones notice at their next step."""
        with self._cv:
            self._queues.pop(job_id, None)
            if job_id in self._turn:
                self._turn.remove(job_id)
            self._delayed = [d for d in self._delayed if d[2].job_id != job_id]
            self._known = {k for k in self._known if k[0] != job_id}
            self._due = {k for k in self._due if k[0] != job_id}

    def holds(self, key: tuple[str, int, str]) -> bool:
        """Whether this task is held (queued, delayed for a retry, or running)."""
        with self._cv:
            return key in self._known

    def queued(self, job_id: str) -> int:
        """How many of this job's tasks are held (queued, delayed for a retry, or running)."""
        with self._cv:
            return sum(1 for k in self._known if k[0] == job_id)

    # --- dispatching --------------------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                task = self._next_locked()
                if task is None:
                    continue
                self._handoff.append(task)
                if self._idle_workers:
                    self._work_cv.notify()
                elif len(self._threads) < 2 * self.concurrency + 8:
                    w = threading.Thread(target=self._worker, name=f"shd-worker-{len(self._threads)}", daemon=True)
                    self._threads.append(w)
                    w.start()

    def _next_locked(self) -> Task | None:
        """The next task to hand out, taking its slot; or None after waiting for something to change."""
        now = self._turned = self.clock()
        while self._delayed and self._delayed[0][0] <= now:
            self._queue_locked(self._delayed.pop(0)[2], 0.0)
        hold = self.gate.hold(now)
        if hold is None and self._in_flight < self.concurrency and self._turn:
            job_id = self._turn.popleft()
            q = self._queues[job_id]
            task = q.popleft()
            if q:
                self._turn.append(job_id)
            else:
                del self._queues[job_id]
            self._in_flight += 1
            return task
        if hold is None:
            hold = self._delayed[0][0] - now if self._delayed else IDLE_WAKE
        self._cv.wait(timeout=min(max(hold, 0.01), IDLE_WAKE))
        return None

    def _worker(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._handoff and not self._stop.is_set():
                    self._idle_workers += 1
                    self._work_cv.wait(timeout=IDLE_WAKE)
                    self._idle_workers -= 1
                if self._stop.is_set():
                    return
                task = self._handoff.popleft()
            self._run(task)

    def _run(self, task: Task) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                with self._cv:
                    self._in_flight -= 1
                    self._cv.notify()

        log = self.log.bind(job=task.job_id, frame=task.idx, stage=str(task.stage))
        requeue: Requeue = None
        try:
            requeue = self.run(task, release, log)
        except Stopped:
            pass
        except StoreError as e:
            log.error("store_error_will_retry", error=str(e))
            requeue = (task, STORE_RETRY)
        except Exception as e:  # a bug must not kill the worker: logged with its traceback, the task retried later
            if isinstance(e, DiskFull) or diskfull.is_full(e):
                # e.g. a painted image that cannot be written: its prediction stays recorded, nothing is lost
                log.error("disk_full_will_retry", error=str(e), retry_in=DISK_FULL_RETRY)
                requeue = (task, DISK_FULL_RETRY)
            else:
                log.exception("stage_crashed", error=f"{type(e).__name__}: {e}")
                requeue = (task, CRASH_RETRY)
        finally:
            release()
            with self._cv:
                if requeue is not None and not self._stop.is_set():
                    self._queue_locked(*requeue)
                else:
                    self._known.discard(task.key)
                    self._due.discard(task.key)

"""Never pay twice for the same thing: paid results are found again by what they are the result of.

Every paid prediction is recorded with a content key (`content_key`): the model version and its inputs, with the
frame's picture as the SHA-256 of its bytes (not the upload URL, which differs every time) and without the seed.
A prompt is keyed by the picture, the prompt model and its inputs; a painting by the prompt, the image model and
its inputs, and matched on its seed too when seeds are fixed. Before paying, the stage runner asks `find_or_claim`:

    Found      a result with this key exists (this job's or any earlier one's): the frame takes it, for nothing
    Wait       a prediction with this key is in flight now: wait for it (the task is woken when it ends)
    Claimed    nothing yet: this task pays, and every other task with the key waits for it until `release`

A prediction in flight is waited for only if this process will see it end: another task here pays for it, or its
task is one this process works on (`at_work`: its job is being run here, or the engine holds the task), e.g.
after a restart, before that task has resumed it. One left live in the ledger by a job nobody works on now (an
interrupted `shd process`, a daemon's job while `shd process` works alone, a job waiting for a free job slot) is
not: waiting for it would never end, so the task pays for its own.

What is looked up follows `replicate.reuse` (`lookup_for`): "prompts" (the default) reuses prompts, and paintings
only when `replicate.seed` is fixed (the same prompt and seed paint the same picture; with random seeds each run
asks for new paintings); "all" reuses paintings whatever the seed; "none" reuses nothing. Keys are recorded in
every mode, so a mode switched on later finds what was paid for before.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shd.store import Prediction, Store

TaskKey = tuple[str, int, str]


def content_key(ref: str, input: Mapping[str, Any]) -> str:
    """The key of a result: SHA-256 of the model version and its input (files given as their digests)."""
    text = json.dumps({"model": ref, "input": dict(input)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(data: bytes) -> str:
    """How a file input appears in a content key."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Lookup:
    """What a stage's result is looked up by: its content `key`, and the `seed` a painting must have been painted
    with (None: any); `active` False when `replicate.reuse` does not reuse it (the key is still recorded)."""

    key: str
    seed: int | None = None
    active: bool = True

    @property
    def claim(self) -> str:
        return self.key if self.seed is None else f"{self.key}:{self.seed}"


def lookup_for(mode: str, key: str, *, painting: bool, seed: int | None, seed_fixed: bool) -> Lookup:
    """PURE: how `replicate.reuse` = `mode` looks a result up (see the module docstring)."""
    if mode == "none":
        return Lookup(key, active=False)
    if not painting:
        return Lookup(key)
    if seed_fixed:
        return Lookup(key, seed)
    return Lookup(key, active=mode == "all")


@dataclass(frozen=True)
class Found:
    source: Prediction   # the row whose result the frame takes


class Wait:
    """Another task is paying for this key now."""


class Claimed:
    """This task pays; `Reuse.release` when it is done."""


class Reuse:
    """The claims on keys in flight, and the tasks waiting for them. Thread-safe."""

    def __init__(self, store: Store, expedite: Callable[[Iterable[TaskKey]], None],
                 at_work: Callable[[TaskKey], bool]):
        self.store = store
        self.expedite = expedite
        self.at_work = at_work  # whether this process will resume that task's prediction (see the docstring)
        self._lock = threading.Lock()
        self._claims: dict[str, TaskKey] = {}          # by Lookup.claim
        self._waiting: dict[str, set[TaskKey]] = {}    # by Lookup.key: any end of a prediction with the key wakes them

    def find_or_claim(self, lookup: Lookup, task: TaskKey,
                      available: Callable[[Prediction], bool]) -> Found | Wait | Claimed:
        """A result to take (the first `available` one), a key to wait for, or the claim to pay for it."""
        with self._lock:
            owner = self._claims.get(lookup.claim)
            if owner is not None and owner != task:
                self._waiting.setdefault(lookup.key, set()).add(task)
                return Wait()
            for source in self.store.reusable(lookup.key, lookup.seed):
                if available(source):
                    return Found(source)
            if owner is None and any(self.at_work(t) for t in self.store.key_in_flight(lookup.key, lookup.seed)):
                self._waiting.setdefault(lookup.key, set()).add(task)
                return Wait()
            self._claims[lookup.claim] = task
            return Claimed()

    def release(self, lookup: Lookup, task: TaskKey) -> None:
        """The task that claimed (or resumed a prediction with) this key is done with it: wake its waiters."""
        with self._lock:
            if self._claims.get(lookup.claim) == task:
                del self._claims[lookup.claim]
            waiting = self._waiting.pop(lookup.key, set())
        if waiting:
            self.expedite(waiting)

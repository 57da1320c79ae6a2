"""Whether shd works on a state directory now, and what it says about itself, for commands in other processes
(`shd status`, a `shd process` following the daemon).

Whoever works on a state directory (the daemon, or a `shd process` in the foreground) holds its lock (lock.py) and
rewrites `state_dir/heartbeat.json` every BEAT_EVERY seconds, and at once when a hold begins or ends:

    {"pid": 1234, "kind": "daemon", "at": 1764470000.5, "jobs": null,
     "paused": [{"kind": "unreachable", "reason": "waiting for Replicate: ...", "since": 1764469990.1}]}

`jobs` is null for the daemon (it works every unfinished job) and the job ids of a `shd process`. A worker is alive
when the lock file names it, its process exists and its heartbeat is younger than STALE seconds: a SIGKILLed daemon
leaves its lock line and its heartbeat behind, but not its process (and should another process get its number, the
heartbeat goes stale). The file stays after its writer stops: its `at` is when the work stopped, so `shd status`
stops the clock of an interrupted job there. The file is private (0600) and replaced atomically.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shd import lock
from shd.scheduler.holds import Paused

HEARTBEAT_NAME = "heartbeat.json"
BEAT_EVERY = 2.0
STALE = 30.0


@dataclass(frozen=True)
class Beat:
    """What a heartbeat file says."""

    pid: int
    kind: str                         # "daemon" or "process"
    at: float                         # epoch seconds of the beat
    paused: tuple[Paused, ...] = ()
    jobs: tuple[str, ...] | None = None   # the jobs a `shd process` works on; None: every job (the daemon)

    @property
    def reason(self) -> str | None:
        """The holds in force as one reason (as the engine says it), or None."""
        return "; ".join(p.reason for p in self.paused) or None

    def works_on(self, job_id: str) -> bool:
        return self.jobs is None or job_id in self.jobs

    @classmethod
    def this_daemon(cls, paused: str | None) -> Beat:
        """This process as the daemon, paused for `paused` (the web page's view of itself)."""
        return cls(os.getpid(), "daemon", time.time(), (Paused("paused", paused, None),) if paused else ())


def read_beat(state_dir: Path) -> Beat | None:
    """The last heartbeat written on `state_dir`, whether its writer still lives or not; None if there is none."""
    try:
        data = json.loads((state_dir / HEARTBEAT_NAME).read_text())
        paused = tuple(Paused(str(p["kind"]), str(p["reason"]), None if p.get("since") is None else float(p["since"]))
                       for p in data.get("paused") or ())
        jobs = data.get("jobs")
        return Beat(int(data["pid"]), str(data["kind"]), float(data["at"]), paused,
                    None if jobs is None else tuple(str(j) for j in jobs))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def alive(beat: Beat | None, holder: lock.Holder | None, now: float, pid_exists: bool) -> bool:
    """PURE: whether the worker that wrote `beat` works now (see the module docstring)."""
    return (beat is not None and holder is not None and holder.pid == beat.pid and pid_exists
            and now - beat.at < STALE)


def worker(state_dir: Path, now: float | None = None) -> Beat | None:
    """The heartbeat of whoever works on `state_dir` now, or None when nobody does."""
    beat = read_beat(state_dir)
    if beat is None:
        return None
    now = time.time() if now is None else now
    return beat if alive(beat, lock.holder(state_dir), now, _pid_exists(beat.pid)) else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class Heartbeat:
    """The heartbeat of this process on one state directory. Not thread-safe: one caller beats it."""

    def __init__(self, state_dir: Path, kind: str):
        self.path = state_dir / HEARTBEAT_NAME
        self.kind = kind
        self._last = 0.0
        self._said: tuple[Any, ...] | None = None

    def beat(self, paused: Sequence[Paused], jobs: Sequence[str] | None = None, now: float | None = None, *,
             force: bool = False) -> None:
        """Write the heartbeat if BEAT_EVERY seconds have passed, what it says has changed, or `force` (the last
        one, when the work stops). An OSError (a full disk) is left to the caller, which says so and goes on."""
        now = time.time() if now is None else now
        said = (tuple(paused), None if jobs is None else tuple(jobs))
        if not force and said == self._said and now - self._last < BEAT_EVERY:
            return
        doc = {"pid": os.getpid(), "kind": self.kind, "at": round(now, 3),
               "jobs": None if said[1] is None else list(said[1]),
               "paused": [{"kind": p.kind, "reason": p.reason, "since": p.since} for p in said[0]]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        os.replace(tmp, self.path)
        self._last, self._said = now, said

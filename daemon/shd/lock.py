"""Who works on a state directory: an exclusive lock on `state_dir/shd.lock`, which also says who holds it.

The lock is an `flock` on the file, so the kernel drops it when its holder dies, even by SIGKILL. The holder writes
one line of JSON into the file, `{"pid": 1234, "kind": "daemon", "since": 1764470000.0}` (kind "daemon" for
`shd run`, "process" for `shd process`), and empties it when it lets go. `holder()` reads that line without taking
the lock; after a SIGKILL the line outlives its lock, so it names a holder only while the lock is held.

Who waits for whom (service/state_dir.py, process.py), so that two processes never work on one store at once:
* `shd run` takes the lock; if a daemon holds it, it exits 2 naming that daemon's pid; if a `shd process` holds it,
  it waits for it to finish (and says so).
* `shd process` takes the lock and works in the foreground; if a daemon holds it, it hands its job to the daemon
  and follows it; if another `shd process` holds it, it waits.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "shd.lock"


@dataclass(frozen=True)
class Holder:
    pid: int
    kind: str      # "daemon" or "process"
    since: float   # when it took the lock (Unix time)


def holder(state_dir: Path) -> Holder | None:
    """What the lock file of `state_dir` says about its holder, read without taking the lock: None if it says
    nothing (free, or just being taken). May name a holder killed by SIGKILL (see the module docstring)."""
    try:
        data = json.loads((state_dir / LOCK_NAME).read_text())
        return Holder(int(data["pid"]), str(data["kind"]), float(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class StateLock:
    """The lock of one state directory, for one holder. Not reentrant: take it once, `release()` it once."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, kind: str) -> bool:
        """Take the lock without waiting and record this process as its `kind` holder; False if someone holds it.
        The descriptor is not inherited by children (ffmpeg), so none of them can keep the lock alive."""
        if self._fd is not None:
            return True
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        line = json.dumps({"pid": os.getpid(), "kind": kind, "since": round(time.time(), 3)}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Let go (idempotent): the file is emptied first, so nobody reads this process as the holder after."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def holder(self) -> Holder | None:
        return holder(self.state_dir)

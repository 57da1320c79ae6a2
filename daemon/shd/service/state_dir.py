"""The daemon's start: the state directory's lock (lock.py) taken, waiting while a `shd process` holds it (logged,
in STATUS=, and the start timeout extended); another daemon there is StateDirBusy (exit 2), naming its pid."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from shd.errors import StateDirBusy
from shd.lock import StateLock
from shd.notify import Notifier

LOCK_WAIT = 0.5      # seconds between tries at a state directory a `shd process` holds
START_EXTENSION = 30.0  # seconds asked of systemd at a time while waiting for the lock (EXTEND_TIMEOUT_USEC)


def take(lock: StateLock, state_dir: Path, notifier: Notifier, log: Any, stop: threading.Event) -> bool:
    """Take the state directory's lock, waiting while a `shd process` holds it. StateDirBusy if a daemon holds
    it; False if told to stop while waiting."""
    waiting_for = None
    while not lock.acquire("daemon"):
        holder = lock.holder()
        if holder is not None and holder.kind == "daemon":
            raise StateDirBusy(f"{lock.path}: another shd daemon (pid {holder.pid}) runs on "
                               f"{state_dir}; stop it first, or give this one another state_dir")
        if holder is not None and holder.pid != waiting_for:
            waiting_for = holder.pid
            log.warning("waiting_for_state_dir", holder=holder.kind, holder_pid=holder.pid,
                        lock=str(lock.path))
            notifier.status(f"waiting for shd {holder.kind} (pid {holder.pid}) to finish with "
                            f"{state_dir}")
        notifier.extend_timeout(START_EXTENSION)
        if stop.wait(LOCK_WAIT):
            return False
    return True

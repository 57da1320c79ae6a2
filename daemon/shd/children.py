"""Child processes (ffmpeg): what they may see, and that none outlives shd.

* Environment: only what ffmpeg needs (`KEPT_ENV`: PATH, locale, TZ, TMPDIR, HOME). Never the Replicate token,
  systemd's CREDENTIALS_DIRECTORY, NOTIFY_SOCKET or WATCHDOG_*, nor anything else of shd's own environment.
* Each child runs in a process group of its own (so a Ctrl-C in a terminal reaches shd, which decides) and is
  registered while it runs: `stop_all()` (daemon shutdown, `shd process` interrupted) kills every group and reaps
  it, so no ffmpeg is left writing after shd exits.
* A SIGKILLed shd cannot stop its children. So a child that works in a job folder records itself there
  (`ffmpeg.pid` in the folder it writes to: its pid and start time), and the next run of that job first calls
  `stop_leftovers(job folder)`, which kills each recorded process group that still runs (the start time rules out
  a reused pid). Besides, every run writes under names of its own, so a straggler could not touch them.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

KEPT_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "HOME")
PIDFILE = "ffmpeg.pid"
LEFTOVER_WAIT = 5.0  # seconds a killed leftover may take to disappear

_live: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()
_refusing = threading.Event()  # set by stop_all(for_good=True): the daemon is exiting, start nothing new


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a child gets: `KEPT_ENV` and the LC_* locale variables of `environ`, nothing else."""
    return {k: v for k, v in environ.items() if k in KEPT_ENV or k.startswith("LC_")}


def _start_time(pid: int) -> str | None:
    """The process's start time since boot (clock ticks, /proc/PID/stat field 22), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    if fields[0] == "Z":
        return None  # a zombie writes nothing any more
    return fields[19]


@contextmanager
def running(argv: list[str], *, folder: Path | None = None, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` (stdin /dev/null, the cleaned environment, a process group of its own) and yield it. On leaving
    the block the child is killed if it still runs, and reaped; with `folder`, it is recorded in
    `folder/ffmpeg.pid` meanwhile. OSError if it cannot be started, or if shd is exiting."""
    with _lock:
        if _refusing.is_set():
            raise OSError(errno.ECANCELED, "shd is stopping")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=child_env(os.environ), process_group=0, **popen)
        _live.add(proc)
    pidfile = folder / PIDFILE if folder is not None else None
    try:
        if pidfile is not None:
            pidfile.write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
        yield proc
    finally:
        _kill(proc)
        with _lock:
            _live.discard(proc)
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_all(*, for_good: bool = False) -> int:
    """Kill every running child's process group and reap it; returns how many were running. Safe from any
    thread; the threads waiting on those children see them end (killed) and carry on. `for_good` (the daemon
    exiting): from now on `running` starts nothing, so no child can start after this and outlive shd."""
    with _lock:
        if for_good:
            _refusing.set()
        procs = list(_live)
    for proc in procs:
        _kill(proc)
    return len(procs)


def stop_leftovers(folder: Path) -> list[int]:
    """Kill the process groups recorded in `ffmpeg.pid` files anywhere under `folder` by an earlier shd that could
    not stop them (killed with SIGKILL; after a power cut nothing runs any more), wait until they are gone, and
    remove the records. Returns the pids it stopped."""
    return [pid for pidfile in folder.rglob(PIDFILE) if (pid := _stop_recorded(pidfile)) is not None]


def _stop_recorded(pidfile: Path) -> int | None:
    try:
        pid_text, started = pidfile.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        pidfile.unlink(missing_ok=True)
        return None
    stopped = None
    if _start_time(pid) == started:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + LEFTOVER_WAIT
        while _start_time(pid) == started and time.monotonic() < deadline:
            time.sleep(0.01)  # not our child: nothing to wait on but /proc
        stopped = pid
    pidfile.unlink(missing_ok=True)
    return stopped

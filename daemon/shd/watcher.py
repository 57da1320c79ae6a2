"""Inbox events -> files that have fully arrived.

watchdog only *wakes us up*; whether a file is complete is decided in the main thread by `StabilityGate`
(stability.py), from stat samples. Background: ../shared/docs/anchors.md §5. In short:

* `created` fires when a write starts (gorakhargosh/watchdog#586) and large copies send many `modified` events
  (#309): both only make the file a candidate.
* `closed` (IN_CLOSE_WRITE) exists only under inotify (#184, #1235), and a file moved in from outside the inbox
  arrives as `created` with no `closed` after it; rsync/scp write a temp name then rename it (`moved`). `closed`
  and `moved` are hints that wake the check, never proof of completeness.
* An exception in a handler kills watchdog's dispatch thread (#427, #793), so the handler only queues paths, inside
  a try/except that logs; the main loop checks `is_alive()` and calls `restart()`.
* inotify drops events silently on queue overflow (#654): `rescan()` is the safety net, run at start, after a
  restart, and periodically by the caller.
* inotify sees nothing written by other hosts on NFS/SMB (#409, #504): `polling=True` selects `PollingObserver`.
* The watch is non-recursive: one inotify watch, subfolders are not ours.
* The inbox is not a way to read other files: entries are looked at with `os.lstat`, so a symbolic link is never
  followed, and only regular files become candidates. A link, folder, FIFO, socket or device is left where it is,
  with one `inbox_entry_skipped` log line saying what it is (once per entry, however often the inbox is rescanned).
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
import time
from pathlib import Path

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from shd.errors import ConfigError, ShdError
from shd.stability import Signature, StabilityGate, why_not_regular

try:  # Linux; elsewhere the platform's default observer stands in
    from watchdog.observers.inotify import InotifyObserver as _NativeObserver
except ImportError:  # pragma: no cover - not Linux
    from watchdog.observers import Observer as _NativeObserver  # type: ignore[assignment]  # same interface

__all__ = ["InboxWatcher", "is_ignored", "Signature", "StabilityGate"]

log = structlog.get_logger()

_IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")

# What the handler queues: ("seen", path) makes a candidate, ("hint", path) also asks for a check now.
_SEEN = "seen"
_HINT = "hint"


def is_ignored(name: str) -> bool:
    """True for names that are never jobs: hidden (`.x`), editor/backup (`~x`) and in-progress download/copy names
    (`*.part`, `*.tmp`, `*.crdownload`, `*.partial`, suffixes case-insensitive). Pure; `name` is a base name."""
    if not name or name.startswith((".", "~")):
        return True
    return name.lower().endswith(_IGNORED_SUFFIXES)


class _InboxHandler(FileSystemEventHandler):
    """Runs on watchdog's thread: turns events for files directly in the inbox into queue entries. Never raises."""

    def __init__(self, inbox: str, events: queue.SimpleQueue[tuple[str, Path]], wakeup: threading.Event):
        super().__init__()
        self._inbox = inbox  # absolute, normalised
        self._events = events
        self._wakeup = wakeup

    def _accept(self, raw: bytes | str) -> Path | None:
        path = os.path.abspath(os.fsdecode(raw))
        parent, name = os.path.split(path)
        if parent != self._inbox or is_ignored(name):
            return None
        return Path(path)

    def _put(self, kind: str, raw: bytes | str) -> None:
        path = self._accept(raw)
        if path is not None:
            self._events.put((kind, path))
            self._wakeup.set()

    def dispatch(self, event: FileSystemEvent) -> None:
        """Queue the event's inbox path; log and swallow any error (an exception would kill the observer)."""
        try:
            if event.is_directory:
                return
            if isinstance(event, FileMovedEvent):
                # a `.part` renamed to `.mp4` inside the inbox: the destination is the candidate
                self._put(_HINT, event.dest_path)
            elif isinstance(event, FileClosedEvent):
                self._put(_HINT, event.src_path)
            elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
                self._put(_SEEN, event.src_path)
        except Exception:
            with contextlib.suppress(Exception):  # not even a broken logger may escape into watchdog's thread
                log.exception("watcher.handler_failed", fs_event=repr(event))


def _look(path: Path) -> tuple[Signature | None, os.stat_result | None]:
    """(size, mtime_ns, inode) of `path` if it is a regular file (a link is not followed), and its lstat (None if
    it is gone)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None, None
    if not stat.S_ISREG(st.st_mode):
        return None, st
    return (st.st_size, st.st_mtime_ns, st.st_ino), st


def _readable(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK))
        return True
    except OSError:
        return False


class InboxWatcher:
    """Watches one inbox folder (non-recursively) and reports files that have fully arrived.

    Threading: watchdog's thread only fills a queue and sets `wakeup`; everything else (`poll`, `rescan`,
    `next_check_in`, `restart`) is meant for ONE caller thread, the daemon's main loop, which typically does::

        watcher.start()
        while running:
            for path in watcher.poll():
                claim(path)                     # move it out of the inbox
            if not watcher.is_alive():
                watcher.restart()
            watcher.wakeup.wait(watcher.next_check_in(time.monotonic()))
    """

    def __init__(self, inbox: Path, *, stable_seconds: float, polling: bool = False, poll_interval: float = 1.0):
        """Build the watcher (nothing starts yet). `stable_seconds`: see `StabilityGate`; `polling` selects
        `PollingObserver(timeout=poll_interval)` (NFS/SMB inboxes) instead of inotify."""
        self.inbox = Path(inbox)
        self.polling = polling
        self.poll_interval = poll_interval
        self.gate = StabilityGate(stable_seconds)
        self.wakeup = threading.Event()
        """Set from watchdog's thread whenever an event was queued; `poll()` clears it."""
        self._events: queue.SimpleQueue[tuple[str, Path]] = queue.SimpleQueue()
        self._observer: BaseObserver | None = None
        self._unreadable: dict[Path, Signature | None] = {}
        self._skipped: dict[Path, tuple[str, int]] = {}  # entries that are not regular files, logged once each

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def _check_inbox(self) -> None:
        if not self.inbox.exists():
            raise ConfigError(self.inbox, ["the inbox folder does not exist"])
        if not self.inbox.is_dir():
            raise ConfigError(self.inbox, ["the inbox is not a folder"])

    def _new_observer(self) -> BaseObserver:
        if self.polling:
            return PollingObserver(timeout=self.poll_interval)
        return _NativeObserver()

    def _start_observer(self) -> None:
        self._check_inbox()
        inbox = os.path.abspath(self.inbox)
        handler = _InboxHandler(inbox, self._events, self.wakeup)
        try:
            observer = self._new_observer()
            observer.schedule(handler, inbox, recursive=False)
            observer.start()
        except OSError as exc:
            # ENOSPC / EMFILE: inotify watch or instance limits (watchdog #673, #846)
            raise ShdError(
                f"{self.inbox}: cannot watch the inbox ({exc}); raise fs.inotify.max_user_watches /"
                " max_user_instances or use polling"
            ) from exc
        self._observer = observer

    def start(self) -> None:
        """Start watching, then add every file already in the inbox as a candidate.

        Raises `ConfigError` naming the inbox when it is missing or not a folder, `ShdError` when the observer
        cannot start (e.g. inotify limits). The observer starts before the scan so no file falls between them.
        """
        if self._observer is not None:
            raise RuntimeError("InboxWatcher.start() called twice; use restart()")
        self._start_observer()
        self.rescan()
        log.info("watcher.started", inbox=str(self.inbox), polling=self.polling)

    def stop(self) -> None:
        """Stop the observer and wait for its thread (idempotent). Queued events and candidates are kept."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        try:
            observer.stop()
        except Exception:  # a dead observer may fail to stop cleanly; we are discarding it anyway
            log.warning("watcher.stop_failed", exc_info=True)
        if observer.is_alive():
            observer.join(timeout=10)

    def is_alive(self) -> bool:
        """True while the observer thread and its emitter threads all run; False before start and after stop."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in observer.emitters)

    def restart(self) -> None:
        """Replace the observer (for when `is_alive()` turned False) and rescan the inbox: events missed while it
        was dead are recovered by the scan. Raises like `start()`."""
        log.warning("watcher.restarting", inbox=str(self.inbox))
        self.stop()
        self._start_observer()
        self.rescan()

    # -- main-loop calls ---------------------------------------------------------------------------------------

    def rescan(self) -> list[Path]:
        """Add every non-ignored regular file directly in the inbox as a candidate; return them.

        The safety net for missed events (inotify overflow, polling gaps, downtime). Idempotent: existing
        candidates keep their clock. A missing inbox yields [] and a warning (the mount may be gone: never treat
        that as "files deleted"). Entries that are not regular files are skipped (see the module docstring).
        """
        found: list[Path] = []
        try:
            entries = list(os.scandir(self.inbox))
        except OSError as exc:
            log.warning("watcher.rescan_failed", inbox=str(self.inbox), error=str(exc))
            return found
        seen = set()
        for entry in entries:
            if is_ignored(entry.name):
                continue
            path = Path(os.path.abspath(entry.path))
            seen.add(path)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                self._skip(path, st)
                continue
            self.gate.candidate(path)
            found.append(path)
        for path in set(self._skipped) - seen:
            del self._skipped[path]
        log.debug("watcher.rescanned", candidates=len(found))
        if found:
            self.wakeup.set()
        return sorted(found)

    def _skip(self, path: Path, st: os.stat_result) -> None:
        """Say once that `path` is not a regular file and will not become a job (again if it changes)."""
        reason = why_not_regular(st.st_mode) or "not a regular file"
        if self._skipped.get(path) != (reason, st.st_ino):
            self._skipped[path] = (reason, st.st_ino)
            log.warning("inbox_entry_skipped", path=str(path), reason=reason)

    def candidate(self, path: Path) -> None:
        """Track `path` again (e.g. after a failed claim); it is returned by `poll()` once stable."""
        self.gate.candidate(Path(os.path.abspath(path)))
        self.wakeup.set()

    def forget(self, path: Path) -> None:
        """Stop tracking `path` (no-op if untracked)."""
        self.gate.forget(Path(os.path.abspath(path)))

    def poll(self, now: float | None = None) -> list[Path]:
        """Drain queued events into the gate, stat every candidate, and return the files that have fully arrived.

        `now` defaults to `time.monotonic()`. Clears `wakeup` first, so an event that comes in meanwhile sets it
        again. Each path is returned once (absolute, in the inbox); the caller claims it by moving it away, or calls
        `candidate()` to have it checked again. A stable file that cannot be opened for reading stays a candidate
        (logged once per signature) until it can be. Never blocks on the observer; stats are the only I/O.
        """
        if now is None:
            now = time.monotonic()
        self.wakeup.clear()
        while True:
            try:
                kind, path = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == _HINT:
                self.gate.hinted(path, now)
            else:
                self.gate.candidate(path)
        for path in self.gate.pending():
            sig, st = _look(path)
            if sig is None and st is not None:
                self._skip(path, st)
            self.gate.observe(path, sig, now)
        for path in list(self._unreadable):
            if path not in self.gate:
                del self._unreadable[path]
        ready: list[Path] = []
        for path in self.gate.ready(now):
            if _readable(path):
                self._unreadable.pop(path, None)
                ready.append(path)
                continue
            sig, _ = _look(path)
            if sig is None:
                continue  # vanished (or swapped) between the stat and the open
            if self._unreadable.get(path) != sig:
                log.warning("watcher.unreadable", path=str(path))
                self._unreadable[path] = sig
            self.gate.candidate(path)
        return ready

    def next_check_in(self, now: float | None = None) -> float | None:
        """Seconds from `now` (default `time.monotonic()`) until `poll()` could next return something without a new
        event: 0 when events are queued or a candidate is due, None when nothing is pending (wait for `wakeup`)."""
        if now is None:
            now = time.monotonic()
        if not self._events.empty():
            return 0.0
        return self.gate.next_check_in(now)

"""PURE: when has a file in the inbox "fully arrived"?

No I/O and no clock here: the caller stats the files and passes the signature and the time in, so every rule can be
tested with plain numbers (see ../shared/docs/anchors.md §5.2).

A *signature* is ``(size, mtime_ns, inode)``, or ``None`` when the file is gone. A candidate becomes **ready** when

* the same signature was seen in at least 2 samples,
* the first and the latest of those samples are at least ``stable_seconds`` apart,
* the size is non-zero, or an empty file has stayed empty for ``EMPTY_FACTOR`` times the window (a slow copy may
  not have written its first byte yet; a file that stays empty is a mistake to be moved aside with its reason,
  not left in the inbox for ever),
* no hint (a close-after-write or moved-in event) arrived after the latest sample, and
* the latest sample is fresh: taken no more than ``stable_seconds`` before ``now``.

A changed signature restarts the candidate's clock; a vanished file is dropped. A hint never makes a file ready on
its own (writers may close and reopen a file, and rsync/scp close a temp file before renaming it): it only makes the
candidate due for a sample right away, so the window is anchored at the moment the writer closed the file rather
than at the next periodic check.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

Signature = tuple[int, int, int]
"""(size, mtime_ns, inode) of a file, as ``os.stat`` gives them."""

__all__ = ["EMPTY_FACTOR", "Signature", "StabilityGate", "why_not_regular"]

EMPTY_FACTOR = 4
"""An empty file must hold still this many times longer than a file with data before it is ready."""


def why_not_regular(mode: int) -> str | None:
    """Why an inbox entry with this `st_mode` (from `os.lstat`: a link is not followed) never becomes a job, or
    None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "symbolic link, not followed"
    if stat.S_ISDIR(mode):
        return "a folder (not watched)"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    return "not a regular file"


@dataclass
class _Candidate:
    sig: Signature | None = None  # latest signature seen; None: not sampled yet
    since: float = 0.0  # time of the first sample with this signature
    last: float = 0.0  # time of the latest sample with this signature
    samples: int = 0  # samples with this signature
    hinted: bool = False  # a hint arrived after the latest sample


class StabilityGate:
    """Decides which candidate files have stopped changing; pure bookkeeping, times are passed in.

    All methods are O(candidates) at worst, never block and never touch the file system. Not thread-safe: one
    owner (the daemon's main loop) calls it.
    """

    def __init__(self, stable_seconds: float):
        """`stable_seconds` >= 0: how long a signature must stay the same, across at least 2 samples."""
        if stable_seconds < 0:
            raise ValueError(f"stable_seconds must be >= 0, not {stable_seconds!r}")
        self.stable_seconds = float(stable_seconds)
        self._candidates: dict[Path, _Candidate] = {}

    def __contains__(self, path: object) -> bool:
        return path in self._candidates

    def __len__(self) -> int:
        return len(self._candidates)

    def candidate(self, path: Path) -> None:
        """Start tracking `path` (idempotent: an existing candidate keeps its samples and clock)."""
        self._candidates.setdefault(Path(path), _Candidate())

    def hinted(self, path: Path, now: float) -> None:
        """Record a close-after-write / moved-in event for `path`, adding it as a candidate if needed.

        The hint makes the candidate due for a sample now (`next_check_in` returns 0) and keeps it from being ready
        until a sample taken after the hint; it never shortens the window below 2 identical samples spanning
        `stable_seconds`. `now` is accepted for symmetry with the other calls.
        """
        del now  # the hint is ordered by the calls, not by time
        self._candidates.setdefault(Path(path), _Candidate()).hinted = True

    def observe(self, path: Path, sig: Signature | None, now: float) -> None:
        """Record a sample of a candidate taken at `now`: its signature, or None if the file is gone.

        None drops the candidate. A signature different from the previous one restarts the clock at `now`. A path
        that is not a candidate is ignored (it was claimed or forgotten meanwhile).
        """
        path = Path(path)
        cand = self._candidates.get(path)
        if cand is None:
            return
        if sig is None:
            del self._candidates[path]
            return
        cand.hinted = False
        if sig != cand.sig:
            cand.sig, cand.since, cand.last, cand.samples = sig, now, now, 1
        else:
            cand.last = max(cand.last, now)
            cand.samples += 1

    def _window(self, cand: _Candidate) -> float:
        empty = cand.sig is not None and cand.sig[0] == 0
        return self.stable_seconds * (EMPTY_FACTOR if empty else 1)

    def _is_ready(self, cand: _Candidate, now: float) -> bool:
        return (
            cand.sig is not None
            and cand.samples >= 2
            and not cand.hinted
            and cand.last - cand.since >= self._window(cand)
            and now - cand.last <= self.stable_seconds
        )

    def ready(self, now: float) -> list[Path]:
        """Return the candidates that have fully arrived as of `now`, in path order, and stop tracking them.

        Each path is returned once; call `candidate()` again to have it checked again.
        """
        done = sorted(p for p, c in self._candidates.items() if self._is_ready(c, now))
        for path in done:
            del self._candidates[path]
        return done

    def forget(self, path: Path) -> None:
        """Stop tracking `path` (no-op when it is not a candidate)."""
        self._candidates.pop(Path(path), None)

    def pending(self) -> list[Path]:
        """Every candidate, in path order: the files the caller should stat and pass to `observe`."""
        return sorted(self._candidates)

    def next_check_in(self, now: float) -> float | None:
        """Seconds (>= 0) from `now` until a new sample could make some candidate ready; None without candidates.

        0 means "sample now": a candidate never sampled, hinted since its last sample, already ready, or whose last
        sample went stale. A zero-size candidate is rechecked every `stable_seconds`, in case its writer's events
        were missed, and becomes ready after EMPTY_FACTOR windows.
        """
        best: float | None = None
        for cand in self._candidates.values():
            if cand.sig is None or cand.hinted or self._is_ready(cand, now):
                due = now
            elif cand.sig[0] == 0:
                due = min(cand.last + self.stable_seconds, cand.since + self._window(cand))
            else:
                # also covers a stale latest sample: then since + stable_seconds <= last + stable_seconds < now
                due = cand.since + self.stable_seconds
            wait = max(0.0, due - now)
            best = wait if best is None else min(best, wait)
        return best

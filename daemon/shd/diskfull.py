"""Telling a full disk from a bad video: a write that failed for lack of space is never the input's fault.

Three sources, each checked by its number, not by scraping messages:
* Python's OSError: errno ENOSPC or EDQUOT (`is_full`);
* ffmpeg's exit status: ffmpeg >= 5 exits with 256 - errno on an I/O error (measured with the bundled ffmpeg 9.0 on a
  full tmpfs: 228 for ENOSPC, writing frames or an mp4 alike), or any non-zero status while the file system it was
  writing to has less than `LOW_SPACE` bytes left (older ffmpegs exit with 1) (`ffmpeg_ran_out`);
* SQLite's SQLITE_FULL, which the store turns into the same DiskFull (store/connection.py).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FFMPEG_FULL_STATUSES = frozenset(256 - e for e in FULL_ERRNOS)
LOW_SPACE = 1 << 20  # bytes: a file system with less free than this counts as full after a failed write

MESSAGE = "no space left on device"


def is_full(exc: BaseException) -> bool:
    """Whether `exc` is an OSError saying the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def nearly_full(folder: Path) -> bool:
    """Whether the file system holding `folder` (or its nearest existing parent) has less than LOW_SPACE free."""
    for candidate in (folder, *folder.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize < LOW_SPACE
    return False


def ffmpeg_ran_out(returncode: int, folder: Path) -> bool:
    """Whether an ffmpeg that exited with `returncode` while writing into `folder` failed for lack of space."""
    if returncode in FFMPEG_FULL_STATUSES:
        return True
    return returncode > 0 and nearly_full(folder)

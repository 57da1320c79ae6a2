"""`shd process` on a terminal: one live line of progress instead of log lines.

* `line(summary, width)` (pure): "clip.mp4: 12/40 painted, 1 failed, 0:32 elapsed, ETA 1:10", from a job as
  `shd status --json` has it, cut to the terminal's width (a wrapped line could not be redrawn in place).
* `LiveLine`: owns the terminal's stderr while the line is shown: `show()` redraws the line in place; `write()`
  (what the log and `shd: ...` messages are written to) prints whole lines above it and redraws it; `close()` leaves
  the last state on its own line.
* `Ticker`: a thread that shows the job's state every `EVERY` seconds until it is stopped.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from typing import Any, TextIO

from shd.errors import ShdError
from shd.names import printable
from shd.status import _dur as clock  # m:ss (h:mm:ss), as the status table writes times

EVERY = 0.5  # seconds between redraws
CLEAR = "\r\x1b[K"  # back to the start of the line, erase it


def line(summary: dict[str, Any], width: int) -> str:
    """The progress line of a job summary (status.job_summary), at most `width` - 1 characters."""
    fr = summary["frames"]
    parts = [f"{printable(summary['source'])}: {fr['generated']}/{fr['total']} painted", f"{fr['failed']} failed"]
    if summary["state"] not in ("running", "extracting"):
        parts.append(summary["state"])
    parts.append(f"{clock(summary['elapsed'])} elapsed")
    if summary["eta"] is not None:
        parts.append(f"ETA {clock(summary['eta'])}")
    text = ", ".join(parts)
    return text if len(text) < width else text[:max(0, width - 2)] + "…"


class LiveLine:
    """A line redrawn in place on a terminal `stream`, with whole lines of other output printed above it.
    Thread-safe. Has the file methods a logger needs (write, flush, isatty)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._lock = threading.Lock()
        self._line = ""
        self._pending = ""

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns or shutil.get_terminal_size().columns  # a terminal that does not say: $COLUMNS, else 80

    def show(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self._line = line(summary, self._width())
            self.stream.write(CLEAR + self._line)
            self.stream.flush()

    def write(self, text: str) -> int:
        """Print complete lines above the live line (a partial line waits for its end)."""
        with self._lock:
            self._pending += text
            done, sep, self._pending = self._pending.rpartition("\n")
            if sep:
                self.stream.write(CLEAR + done + "\n" + self._line)
                self.stream.flush()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    def close(self) -> None:
        """End the live line: its last state stays on a line of its own."""
        with self._lock:
            if self._pending:
                self.stream.write(CLEAR + self._pending + "\n" + self._line)
                self._pending = ""
            if self._line:
                self.stream.write("\n")
            self._line = ""
            self.stream.flush()


class Ticker:
    """Shows `summary()` on `live` every EVERY seconds in a thread of its own, until `stop()`."""

    def __init__(self, live: LiveLine, summary: Callable[[], dict[str, Any]]):
        self.live = live
        self.summary = summary
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shd-progress", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.live.show(self.summary())
            except ShdError:  # a busy database: the next redraw will do; the work it shows goes on
                pass
            if self._stop.wait(EVERY):
                return

    def stop(self) -> None:
        """Stop redrawing; the last state is drawn once more."""
        self._stop.set()
        self._thread.join()
        try:
            self.live.show(self.summary())
        except ShdError:
            pass

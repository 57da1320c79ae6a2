"""`shd status --watch`: the status table redrawn in place every few seconds until Ctrl-C (then exit 0, quietly).

On a terminal the screen is redrawn from its top-left corner, each line cut to the terminal's width and the table
to its height, so nothing scrolls. Anywhere else (a pipe, a file, cron) there is nothing to redraw: the table is
printed once, with a note on stderr, and the command ends.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TextIO

from shd.errors import StoreError

CLEAR, HOME, CLEAR_EOL, CLEAR_DOWN = "\x1b[2J", "\x1b[H", "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def screen(table: str, header: str, width: int, height: int) -> str:
    """PURE: one redraw: the header and the table, cut to `width` x `height`, every line cleared to its end. The
    last row stays free for the cursor (a newline there would scroll the screen)."""
    lines = [header, ""] + table.splitlines()
    room = max(1, height - 1)
    if len(lines) > room:
        hidden = len(lines) - (room - 1)
        lines = lines[:room - 1] + [f"... {hidden} more line(s): make the terminal taller"]
    return HOME + "".join(line[:width] + CLEAR_EOL + "\n" for line in lines) + CLEAR_DOWN


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def watch(render: Callable[[], str], interval: float, out: TextIO = sys.stdout) -> int:
    """Redraw `render()` every `interval` seconds until Ctrl-C (or SIGTERM); returns the exit code, 0."""
    if not out.isatty():
        out.write(render() + "\n")
        print("shd: --watch redraws the table on a terminal only; printed it once", file=sys.stderr)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    out.write(CLEAR + HIDE_CURSOR)
    try:
        while True:
            try:
                table = render()
            except StoreError as e:  # e.g. the database is being replaced: say so and try again next time
                table = f"cannot read the store: {e}"
            size = shutil.get_terminal_size()
            header = f"shd status   {time.strftime('%H:%M:%S')}   every {interval:g} s, Ctrl-C to stop"
            out.write(screen(table, header, size.columns, size.lines))
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        out.write(SHOW_CURSOR + "\n")
        out.flush()

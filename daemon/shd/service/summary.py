"""The daemon's one line for systemd (STATUS=): jobs active, frames painted and failed, and why work is held."""

from __future__ import annotations

from shd.app import App
from shd.states import UNFINISHED_JOBS


def summary_line(active: int, done: int, total: int, failed: int, paused: str | None, held: list[str]) -> str:
    """PURE: STATUS='s one line. `paused`: every hold's reason, joined (scheduler/holds.py); `held`: the reasons of
    the jobs a budget cap holds. A daily or monthly cap is already among the pause's reasons; a job's own cap is
    said after the count."""
    line = f"{active} job(s) active, {done}/{total} frames painted, {failed} failed"
    if paused:
        line += f"; PAUSED: {paused}"
    if held:
        own = [h for h in held if not (paused and h in paused)]
        line += f"; HELD: {len(held)} job(s)" + (f": {own[0]}" if own else "")
    return line


def summary(app: App) -> str:
    """STATUS='s line now, read from the store and the engine."""
    active = app.store.jobs(tuple(UNFINISHED_JOBS))
    done = total = failed = 0
    for j in active:
        p = app.store.progress(j.id)
        done += p["generated"]
        failed += p["failed"]
        total += max(j.frames_total or 0, p["extracted"])
    held = [j.held for j in active if j.held]
    return summary_line(len(active), done, total, failed, app.engine.paused, held)

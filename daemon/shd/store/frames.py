"""The frames table: the frames extracted from a job's video, each moved through its states (prompt, then image)
by a checked and logged transition, which FILM's pairs share (`_move`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shd import states
from shd.errors import StoreError
from shd.states import FrameState
from shd.store.connection import Connection
from shd.store.rows import Frame, Pair, _row


class Frames(Connection):
    """A job's frames: one row per frame extracted from its video."""

    def add_frame(self, job_id: str, idx: int, ts: float, path: Path) -> bool:
        """Record an extracted frame; returns False (and changes nothing) if it was already recorded. Not durable:
        a frame lost to a power cut is extracted again."""
        with self.tx(durable=False) as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO frames (job_id, idx, state, ts, path, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, idx, FrameState.EXTRACTED, ts, str(path), time.time()),
            )
            if cur.rowcount:
                self._event(job_id, "frame", None, FrameState.EXTRACTED, frame=idx)
            return bool(cur.rowcount)

    def frame(self, job_id: str, idx: int) -> Frame:
        row = self._one("SELECT * FROM frames WHERE job_id = ? AND idx = ?", (job_id, idx))
        if row is None:
            raise StoreError(f"job {job_id} has no frame {idx}")
        return _row(Frame, row)

    def frames(self, job_id: str, states_: tuple[str, ...] | None = None) -> list[Frame]:
        if states_:
            marks = ",".join("?" * len(states_))
            rows = self._all(f"SELECT * FROM frames WHERE job_id = ? AND state IN ({marks}) ORDER BY idx",
                             (job_id, *states_))
        else:
            rows = self._all("SELECT * FROM frames WHERE job_id = ? ORDER BY idx", (job_id,))
        return [_row(Frame, r) for r in rows]

    def frames_between(self, job_id: str, first: int, last: int) -> list[Frame]:
        """A job's frames `first` to `last` (those that exist), in order."""
        rows = self._all("SELECT * FROM frames WHERE job_id = ? AND idx BETWEEN ? AND ? ORDER BY idx",
                         (job_id, first, last))
        return [_row(Frame, r) for r in rows]

    def transition_frame(self, job_id: str, idx: int, target: FrameState, *, expect: FrameState | None = None,
                         durable: bool = True, **values: Any) -> None:
        """Move a frame to `target`, setting any of prompt, image_path, seed, error, filled_with with it.
        `expect`: the state the caller knows the frame is in (one statement instead of a read and a write; if the
        frame has moved meanwhile, it is read and the transition checked as without it)."""
        self._move("frame", job_id, idx, target, expect, durable, values,
                   {"prompt", "image_path", "seed", "error", "filled_with"}, self.frame)

    def _move(self, kind: str, job_id: str, idx: int, target: str, expect: str | None, durable: bool,
              values: dict[str, Any], allowed: set[str], read: Callable[[str, int], Frame | Pair]) -> None:
        """Move a frame or a pair (`kind`, whose row `read` reads) to `target`, checked by shd.states and logged, with
        `values`, of `allowed` columns; a move to anything but failed clears the error."""
        if not set(values) <= allowed:
            raise StoreError(f"transition_{kind}: cannot set {sorted(set(values) - allowed)}")
        check = states.check_frame if kind == "frame" else states.check_pair
        if target != "failed" and "error" not in values:
            values["error"] = None
        values = {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
        sets = "".join(f", {k} = :{k}" for k in values)
        params = {**values, "state": target, "now": time.time(), "job": job_id, "idx": idx}
        update = f"UPDATE {kind}s SET state = :state, updated_at = :now{sets} WHERE job_id = :job AND idx = :idx"
        with self.tx(durable=durable) as db:
            if expect is not None:
                if expect != target:
                    check(job_id, idx, expect, target)
                if db.execute(update + " AND state = :expect", {**params, "expect": expect}).rowcount:
                    if expect != target:
                        self._event(job_id, kind, expect, target, frame=idx, detail=values.get("error"))
                    return
            current = read(job_id, idx).state
            if current != target:
                check(job_id, idx, current, target)
            db.execute(update, params)
            if current != target:
                self._event(job_id, kind, current, target, frame=idx, detail=values.get("error"))

    def set_filled(self, job_id: str, fills: Mapping[int, str]) -> None:
        """Record how each failed frame's output slot was filled (hold/source), for status (and the row's
        updated_at, so the web page, which asks for rows changed since its last look, sees it)."""
        with self.tx() as db:
            now = time.time()
            for idx, how in fills.items():
                db.execute("UPDATE frames SET filled_with = ?, updated_at = ? WHERE job_id = ? AND idx = ?",
                           (how, now, job_id, idx))

    def frame_counts(self, job_id: str) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) AS n FROM frames WHERE job_id = ? GROUP BY state", (job_id,))
        return {r["state"]: r["n"] for r in rows}

    # --- read-only queries for the web page and /metrics --------------------------------------------------------
    def frames_changed(self, job_id: str, since: float) -> list[Frame]:
        """A job's frames whose row changed after `since` (a time.time() value), in frame order."""
        rows = self._all("SELECT * FROM frames WHERE job_id = ? AND updated_at > ? ORDER BY idx", (job_id, since))
        return [_row(Frame, r) for r in rows]

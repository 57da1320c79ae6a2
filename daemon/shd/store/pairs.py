"""The pairs table (FILM): the gap from one painted frame to the next, moved through its states like a frame (and
by the same transition), and what the video shows in a gap FILM did not fill."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from shd import migrations
from shd.errors import StoreError
from shd.states import PairState
from shd.store.frames import Frames
from shd.store.rows import Pair, _row


class Pairs(Frames):
    """A job's pairs; built on Frames, for the checked and logged move (`_move`) that the two share."""

    def add_pairs(self, job_id: str, idxs: Iterable[int]) -> None:
        """Record the gaps after these frames as painted (both their paintings exist); a recorded one is left as it
        is. Not durable: a pair lost to a power cut is found again from its frames."""
        with self.tx(durable=False) as db:
            now = time.time()
            for idx in idxs:
                if db.execute("INSERT OR IGNORE INTO pairs (job_id, idx, state, updated_at) VALUES (?, ?, ?, ?)",
                              (job_id, idx, PairState.PAINTED, now)).rowcount:
                    self._event(job_id, "pair", None, PairState.PAINTED, frame=idx)

    def pair(self, job_id: str, idx: int) -> Pair:
        row = self._one("SELECT * FROM pairs WHERE job_id = ? AND idx = ?", (job_id, idx))
        if row is None:
            raise StoreError(f"job {job_id} has no pair {idx}")
        return _row(Pair, row)

    def pairs(self, job_id: str) -> list[Pair]:
        """A job's pairs in order ([] from a database older than FILM's, read by `shd status`)."""
        if self.schema < migrations.PAIRS:
            return []
        return [_row(Pair, r) for r in self._all("SELECT * FROM pairs WHERE job_id = ? ORDER BY idx", (job_id,))]

    def pair_counts(self, job_id: str) -> dict[str, int]:
        """A job's pairs by state, and how many gaps show a crossfade instead of FILM's frames ('crossfaded'); {}
        when it has none."""
        if self.schema < migrations.PAIRS:
            return {}
        rows = self._all("SELECT state, COUNT(*) AS n, COUNT(filled_with) AS filled FROM pairs WHERE job_id = ?"
                         " GROUP BY state", (job_id,))
        if not rows:
            return {}
        counts = {r["state"]: int(r["n"]) for r in rows}
        counts["crossfaded"] = sum(int(r["filled"]) for r in rows)
        return counts

    def transition_pair(self, job_id: str, idx: int, target: PairState, *, expect: str | None = None,
                        durable: bool = True, **values: Any) -> None:
        """Move a pair to `target` (checked by shd.states), setting any of clip_path, error, filled_with with it.
        `expect`: the state the caller read (the pair is not read again when it still is)."""
        self._move("pair", job_id, idx, target, expect, durable, values, {"clip_path", "error", "filled_with"},
                   self.pair)

    def set_pair_fills(self, job_id: str, fills: Mapping[int, tuple[str, str]]) -> None:
        """Record what the video shows in each of these gaps instead of FILM's frames, and why: gap -> (what, why).
        A gap that never became a pair (a frame was not painted) is recorded as a failed pair with that reason."""
        with self.tx() as db:
            now = time.time()
            for idx, (what, why) in fills.items():
                if db.execute("INSERT OR IGNORE INTO pairs (job_id, idx, state, error, filled_with, updated_at)"
                              " VALUES (?, ?, ?, ?, ?, ?)", (job_id, idx, PairState.FAILED, why, what, now)).rowcount:
                    self._event(job_id, "pair", None, PairState.FAILED, frame=idx, detail=why)
                else:
                    db.execute("UPDATE pairs SET filled_with = ?, error = COALESCE(error, ?), updated_at = ?"
                               " WHERE job_id = ? AND idx = ?", (what, why, now, job_id, idx))

    def retry_pairs(self, job_id: str) -> None:
        """`shd retry`: failed pairs whose paintings exist are interpolated again; the gaps recorded failed because a
        frame was not painted are forgotten (they become pairs again once both paintings exist); no gap keeps a
        fill. Call it before the failed frames are reset."""
        if self.schema < migrations.PAIRS:
            return
        with self.tx() as db:
            painted = ("(SELECT COUNT(*) FROM frames f WHERE f.job_id = pairs.job_id AND f.idx IN (pairs.idx,"
                       " pairs.idx + 1) AND f.state = 'generated') = 2")
            db.execute(f"DELETE FROM pairs WHERE job_id = ? AND state = 'failed' AND NOT {painted}", (job_id,))
            for p in self._all("SELECT idx FROM pairs WHERE job_id = ? AND state = 'failed'", (job_id,)):
                self.transition_pair(job_id, p["idx"], PairState.PAINTED, expect=PairState.FAILED, filled_with=None)
            db.execute("UPDATE pairs SET filled_with = NULL WHERE job_id = ?", (job_id,))

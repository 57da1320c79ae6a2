"""The ledger of paid predictions: a call recorded (durably) before it is sent, with its frame (or pair) moved in the
same transaction; what the server said, what it cost; the attempts a retry budget counts; and results already paid
for, found by content and reused instead of paying again."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from shd import states
from shd.errors import StoreError
from shd.states import FrameState, PairState, Stage
from shd.store.pairs import Pairs
from shd.store.rows import Prediction, _row

# Prediction ledger statuses: 'creating' is written before the create request is sent; the rest mirror Replicate's,
# plus 'lost' (the server no longer knows the id, or its output expired before we downloaded it), 'refused'
# (the create was turned away, e.g. 429 or 401, so nothing was created or billed; not counted against retry budgets)
# and 'reused' (no call at all: the result of the paid prediction `reused_from` was used; see scheduler/reuse.py).
LIVE_PREDICTION = ("creating", "starting", "processing")

# What each paid stage moves through its states (states.STAGE_STATES): (table, what its rows are called).
SUBJECTS = {Stage.PROMPT: ("frames", "frame"), Stage.IMAGE: ("frames", "frame"), Stage.FILM: ("pairs", "pair")}


class Ledger(Pairs):
    """The predictions table; built on Pairs (and so Frames): a paid call moves its frame or its pair."""

    def _state_of(self, stage: Stage, job_id: str, idx: int) -> str:
        """The state of what `stage` works on: the frame, or the pair for FILM."""
        return self.pair(job_id, idx).state if stage == Stage.FILM else self.frame(job_id, idx).state

    def begin_prediction(self, job_id: str, idx: int, stage: Stage, *, model: str, input: Mapping[str, Any],
                         reason: str, seed: int | None = None, expect: str | None = None,
                         reuse_key: str | None = None) -> Prediction:
        """Record a paid call BEFORE it is sent (status 'creating', durably) and move its frame (its pair, for FILM)
        to the in-flight state. `expect`: that state as the caller read it (saves reading it again when it still
        is). `reuse_key`: the content key of its result (scheduler/reuse.py)."""
        before, inflight, _ = states.STAGE_STATES[stage]
        table, kind = SUBJECTS[stage]
        seeded = ", seed = COALESCE(:seed, seed)" if table == "frames" else ""
        move = f"UPDATE {table} SET state = :state{seeded}, updated_at = :now WHERE job_id = :job AND idx = :idx"
        with self.tx() as db:
            now = time.time()
            params = {"state": inflight, "seed": seed, "now": now, "job": job_id, "idx": idx}
            was: str | None = None
            if expect in (before, inflight) and db.execute(move + " AND state = :was",
                                                           {**params, "was": expect}).rowcount:
                was = expect
            if was is None:
                was = self._state_of(stage, job_id, idx)
                if was not in (before, inflight):
                    raise StoreError(f"job {job_id} {kind} {idx} is {was}, cannot start {stage}")
                db.execute(move, params)
            input_json = json.dumps(dict(input), sort_keys=True)
            pid, attempt = self._conn.execute(
                "INSERT INTO predictions (job_id, frame_idx, stage, attempt, reason, model, input_json, status,"
                " created_at, updated_at, reuse_key) VALUES (?, ?, ?, (SELECT COUNT(*) + 1 FROM predictions"
                " WHERE job_id = ? AND frame_idx = ? AND stage = ?), ?, ?, ?, 'creating', ?, ?, ?)"
                " RETURNING id, attempt",
                (job_id, idx, stage, job_id, idx, stage, reason, model, input_json, now, now, reuse_key),
            ).fetchone()
            self._event(job_id, "prediction", None, "creating", frame=idx, prediction=pid,
                        detail=f"{stage} attempt {attempt}: {reason}")
            if was == before:
                self._event(job_id, kind, was, inflight, frame=idx)
        return Prediction(id=pid, job_id=job_id, frame_idx=idx, stage=str(stage), attempt=attempt, reason=reason,
                          model=model, input_json=input_json, remote_id=None,
                          status="creating", error=None, output_json=None, predict_time=None, created_at=now,
                          updated_at=now, completed_at=None, reuse_key=reuse_key)

    def prediction(self, pid: int) -> Prediction:
        row = self._one("SELECT * FROM predictions WHERE id = ?", (pid,))
        if row is None:
            raise StoreError(f"no prediction {pid}")
        return _row(Prediction, row)

    def update_prediction(self, pred: int | Prediction, *, status: str, remote_id: str | None = None,
                          error: str | None = None, output: Any = None, predict_time: float | None = None,
                          cost_usd: float | None = None, durable: bool = True) -> Prediction:
        """Record what the server said about a prediction (the remote id as soon as it is known), and once it is
        finished what it cost. Given the Prediction as last recorded (not just its id), it is not read again."""
        with self.tx(durable=durable) as db:
            old = pred if isinstance(pred, Prediction) else self.prediction(pred)
            pid = old.id
            now = time.time()
            done = now if status not in LIVE_PREDICTION else None
            db.execute(
                "UPDATE predictions SET status = ?, remote_id = COALESCE(?, remote_id), error = COALESCE(?, error),"
                " output_json = COALESCE(?, output_json), predict_time = COALESCE(?, predict_time),"
                " cost_usd = COALESCE(?, cost_usd), updated_at = ?, completed_at = COALESCE(completed_at, ?)"
                " WHERE id = ?",
                (status, remote_id, error, json.dumps(output) if output is not None else None, predict_time,
                 cost_usd, now, done, pid),
            )
            if old.status != status:
                self._event(old.job_id, "prediction", old.status, status, frame=old.frame_idx, prediction=pid,
                            detail=error or remote_id)
        return replace(old, status=status, remote_id=remote_id or old.remote_id, error=error or old.error,
                       output_json=json.dumps(output) if output is not None else old.output_json,
                       predict_time=predict_time if predict_time is not None else old.predict_time,
                       cost_usd=cost_usd if cost_usd is not None else old.cost_usd,
                       updated_at=now, completed_at=old.completed_at or done)

    def latest_prediction(self, job_id: str, idx: int, stage: Stage) -> Prediction | None:
        row = self._one(
            "SELECT * FROM predictions WHERE job_id = ? AND frame_idx = ? AND stage = ? ORDER BY id DESC LIMIT 1",
            (job_id, idx, stage),
        )
        return _row(Prediction, row) if row else None

    def predictions(self, job_id: str | None = None, *, live: bool = False) -> list[Prediction]:
        where, params = [], []
        if job_id:
            where.append("job_id = ?")
            params.append(job_id)
        if live:
            where.append("status IN ('creating', 'starting', 'processing')")
        sql = "SELECT * FROM predictions" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_row(Prediction, r) for r in self._all(sql, tuple(params))]

    def attempts(self, job_id: str, idx: int, stage: Stage, *, since: float = 0.0) -> list[Prediction]:
        """Every create of one frame's stage at or after `since` (a job's start: retry budgets), oldest first;
        refused ones too (they cost nothing: the retry policy does not count them)."""
        rows = self._all("SELECT * FROM predictions WHERE job_id = ? AND frame_idx = ? AND stage = ?"
                         " AND created_at >= ? ORDER BY id", (job_id, idx, stage, since))
        return [_row(Prediction, r) for r in rows]

    # --- reuse of paid results ----------------------------------------------------------------------------------
    def reusable(self, key: str, seed: int | None = None, limit: int = 5) -> list[Prediction]:
        """The newest results with content key `key` (paid, or themselves reused), painted with `seed` if given."""
        rows = self._all("SELECT * FROM predictions WHERE reuse_key = ? AND status IN ('succeeded', 'reused')"
                         " AND (? IS NULL OR json_extract(input_json, '$.seed') = ?) ORDER BY id DESC LIMIT ?",
                         (key, seed, seed, limit))
        return [_row(Prediction, r) for r in rows]

    def key_in_flight(self, key: str, seed: int | None = None) -> list[tuple[str, int, str]]:
        """The tasks (job, frame, stage) whose prediction with content key `key` (and `seed`) is in flight for a
        frame (or pair) of an unfinished job (after a restart, before its task has resumed it; or left by a job that
        was interrupted)."""
        rows = self._all("SELECT DISTINCT p.job_id, p.frame_idx, p.stage FROM predictions p JOIN jobs j"
                         " ON j.id = p.job_id WHERE p.reuse_key = ? AND p.status IN ('creating', 'starting',"
                         " 'processing') AND (? IS NULL OR json_extract(p.input_json, '$.seed') = ?)"
                         " AND j.state IN ('extracting', 'running') AND (EXISTS (SELECT 1 FROM frames f"
                         " WHERE f.job_id = p.job_id AND f.idx = p.frame_idx AND p.stage IN ('prompt', 'image')"
                         " AND f.state IN ('prompting', 'generating')) OR EXISTS (SELECT 1 FROM pairs q"
                         " WHERE q.job_id = p.job_id AND q.idx = p.frame_idx AND p.stage = 'film'"
                         " AND q.state = 'interpolating'))", (key, seed, seed))
        return [(r["job_id"], r["frame_idx"], r["stage"]) for r in rows]

    def reuse_result(self, job_id: str, idx: int, stage: Stage, source: Prediction, **values: Any) -> None:
        """Settle a frame's stage (a pair's, for FILM) with the result of `source` instead of paying: a ledger row
        with status 'reused' (pointing at the paid prediction, with what it cost as `saved_usd`) and the frame moved
        on to the stage's next state with `values` (prompt, or image_path and seed; a pair's clip_path), in one
        transaction."""
        _, inflight, after = states.STAGE_STATES[stage]
        paid_id = source.reused_from or source.id
        with self.tx(durable=False):  # lost to a power cut, it is looked up and reused again, for free
            now = time.time()
            saved = self._one("SELECT cost_usd FROM predictions WHERE id = ?", (paid_id,))
            pid = self._conn.execute(
                "INSERT INTO predictions (job_id, frame_idx, stage, attempt, reason, model, input_json, status,"
                " output_json, predict_time, created_at, updated_at, completed_at, cost_usd, reuse_key, reused_from,"
                " saved_usd) VALUES (?, ?, ?, (SELECT COUNT(*) + 1 FROM predictions WHERE job_id = ? AND"
                " frame_idx = ? AND stage = ?), ?, ?, ?, 'reused', ?, NULL, ?, ?, ?, 0, ?, ?, ?) RETURNING id",
                (job_id, idx, stage, job_id, idx, stage, f"reused prediction {paid_id}", source.model,
                 source.input_json, source.output_json, now, now, now, source.reuse_key, paid_id,
                 (saved or {}).get("cost_usd") or 0.0),
            ).fetchone()[0]
            self._event(job_id, "prediction", None, "reused", frame=idx, prediction=pid,
                        detail=f"{stage}: result of prediction {paid_id}")
            if stage == Stage.FILM:
                self.transition_pair(job_id, idx, PairState(inflight), durable=False)
                self.transition_pair(job_id, idx, PairState(after), expect=inflight, durable=False, **values)
            else:
                self.transition_frame(job_id, idx, FrameState(inflight), durable=False)
                self.transition_frame(job_id, idx, FrameState(after), expect=FrameState(inflight), durable=False,
                                      **values)

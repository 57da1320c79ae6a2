"""ALL of shd's SQL: jobs, frames, FILM's pairs, the ledger of paid predictions, and the append-only event log.

Contract:
- One writer `Store` per database, shared by the daemon's threads; every method is one transaction
  (`BEGIN IMMEDIATE`, so a read-modify-write never meets SQLITE_BUSY halfway), guarded by one lock.
- WAL mode. A transaction is durable (`synchronous=FULL`: fsynced before COMMIT returns) unless its caller says
  that losing it to a power cut costs only work that a restart redoes for free (`durable=False`: a recorded
  frame, a frame's next state, a remote id). The ledger row of a paid call is always durable, and since the
  WAL is one sequential file, each durable commit also makes every commit before it durable.
- Every state change is checked by `shd.states` inside its transaction and logged in `events`; an illegal one
  raises IllegalTransition and writes nothing.
- `Store.open_readonly()` is for `shd status`: it never writes and never blocks the daemon (WAL readers don't).
- No sqlite3 exception leaves this module: a full disk raises DiskFull, a corrupt file DatabaseDamaged (and sets
  `damaged`, for the daemon to stop on), anything else StoreError; each names the database file.
- The database file is created 0600, in a 0700 folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any


from shd import migrations, states
from shd.errors import StoreError
from shd.states import FrameState, PairState, Stage
from shd.store.rows import Frame, Job, Pair, Prediction, _row
from shd.store.connection import SQLITE_CORRUPT, SQLITE_FULL, SQLITE_IOERR, SQLITE_NOTADB
from shd.store.jobs import Jobs
from shd.store.pairs import Pairs

__all__ = [
    "LIVE_PREDICTION", "SQLITE_CORRUPT", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_NOTADB", "SUBJECTS",
    "Frame", "Job", "Pair", "Prediction", "Store",
]

# Prediction ledger statuses: 'creating' is written before the create request is sent; the rest mirror Replicate's,
# plus 'lost' (the server no longer knows the id, or its output expired before we downloaded it), 'refused'
# (the create was turned away, e.g. 429 or 401, so nothing was created or billed; not counted against retry budgets)
# and 'reused' (no call at all: the result of the paid prediction `reused_from` was used; see scheduler/reuse.py).
LIVE_PREDICTION = ("creating", "starting", "processing")

# What each paid stage moves through its states (states.STAGE_STATES): (table, what its rows are called).
SUBJECTS = {Stage.PROMPT: ("frames", "frame"), Stage.IMAGE: ("frames", "frame"), Stage.FILM: ("pairs", "pair")}


class Store(Jobs, Pairs):
    """The writer. Construct with `Store.open(path)`."""

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

    def spent_since(self, since: float) -> float:
        """Dollars of the predictions that finished at or after `since` (epoch seconds), all jobs."""
        if self.schema < migrations.COSTS:
            return 0.0
        row = self._one("SELECT SUM(cost_usd) AS usd FROM predictions WHERE completed_at >= ?", (since,))
        return float((row or {}).get("usd") or 0.0)

    def job_cost(self, job_id: str) -> dict[str, Any]:
        """What a job's predictions cost: dollars, predict seconds, paid predictions, reused results and what
        reusing saved."""
        if self.schema < migrations.COSTS:
            return {"usd": 0.0, "predict_seconds": 0.0, "predictions": 0, "reused": 0, "saved_usd": 0.0}
        row = self._one(
            "SELECT COALESCE(SUM(cost_usd), 0) AS usd, COALESCE(SUM(predict_time), 0) AS predict_seconds,"
            " SUM(status NOT IN ('refused', 'reused')) AS predictions, SUM(status = 'reused') AS reused,"
            " COALESCE(SUM(saved_usd), 0) AS saved_usd FROM predictions WHERE job_id = ?", (job_id,)) or {}
        return {"usd": round(float(row["usd"]), 6), "predict_seconds": round(float(row["predict_seconds"]), 3),
                "predictions": int(row["predictions"] or 0), "reused": int(row["reused"] or 0),
                "saved_usd": round(float(row["saved_usd"]), 6)}

    def recent_predict_times(self, model: str, limit: int = 1000, *,
                             same: Mapping[str, Any] | None = None) -> list[float]:
        """The predict_time of model `model`'s most recent succeeded predictions (what a typical one takes); with
        `same`, of those whose inputs had these values (FILM's times_to_interpolate)."""
        where = "".join(" AND json_extract(input_json, ?) = ?" for _ in same or {})
        params = [p for k, v in (same or {}).items() for p in (f"$.{k}", v)]
        rows = self._all("SELECT predict_time FROM predictions WHERE model = ? AND status = 'succeeded'"
                         f" AND predict_time IS NOT NULL{where} ORDER BY id DESC LIMIT ?", (model, *params, limit))
        return [float(r["predict_time"]) for r in rows]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,))

    def progress(self, job_id: str) -> dict[str, int]:
        """Cumulative frame counts: extracted (rows), prompted (have a prompt), generated, failed, filled."""
        row = self._one(
            "SELECT COUNT(*) AS extracted, COUNT(prompt) AS prompted,"
            " SUM(state = 'generated') AS generated, SUM(state = 'failed') AS failed,"
            " COUNT(filled_with) AS filled FROM frames WHERE job_id = ?", (job_id,))
        return {k: int(v or 0) for k, v in (row or {}).items()}

    def last_activity(self, job_id: str) -> float:
        """When anything of the job last changed: the job, one of its frames or one of its predictions."""
        row = self._one("SELECT MAX(j.updated_at,"
                        " COALESCE((SELECT MAX(updated_at) FROM frames WHERE job_id = j.id), 0),"
                        " COALESCE((SELECT MAX(updated_at) FROM predictions WHERE job_id = j.id), 0)) AS t"
                        " FROM jobs j WHERE j.id = ?", (job_id,))
        return float(row["t"]) if row else 0.0

    def paid(self, job_id: str) -> dict[str, Any]:
        """How many predictions a job created (by status) and their total predict_time."""
        rows = self._all("SELECT status, COUNT(*) AS n, SUM(predict_time) AS t FROM predictions WHERE job_id = ?"
                         " GROUP BY status", (job_id,))
        return {"by_status": {r["status"]: r["n"] for r in rows},
                "predict_time": round(sum(r["t"] or 0.0 for r in rows), 3)}

    def count_by_state(self, table: str) -> dict[str, int]:
        """How many rows of `table` ('jobs' or 'frames', every job's) are in each state."""
        if table not in ("jobs", "frames"):
            raise StoreError(f"count_by_state: no table {table!r}")
        return {r["state"]: r["n"] for r in self._all(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state")}

    def ledger_by_model(self) -> list[dict[str, Any]]:
        """The whole ledger counted by model and status: rows of `model`, `status`, `n`."""
        return self._all("SELECT model, status, COUNT(*) AS n FROM predictions GROUP BY model, status"
                         " ORDER BY model, status")

    def predict_time_histogram(self, bounds: tuple[float, ...]) -> dict[str, dict[str, Any]]:
        """Per model, over predictions that reported a predict_time: cumulative counts at or below each of
        `bounds` ("buckets"), the count and the sum."""
        cols = "".join(f", SUM(predict_time <= {float(b)!r}) AS b{i}" for i, b in enumerate(bounds))
        rows = self._all(f"SELECT model, COUNT(*) AS n, SUM(predict_time) AS total{cols} FROM predictions"
                         " WHERE predict_time IS NOT NULL GROUP BY model ORDER BY model")
        return {r["model"]: {"buckets": [int(r[f"b{i}"]) for i in range(len(bounds))], "count": int(r["n"]),
                             "sum": float(r["total"])} for r in rows}

    def throttled_creates(self) -> int:
        """Creates the server turned away with a 429 (ledger rows 'refused' with a rate-limit error; nothing was
        created or billed). The error text is the one shd.backends.replicate gives RateLimited."""
        row = self._one("SELECT COUNT(*) AS n FROM predictions WHERE status = 'refused' AND error LIKE '%(429)%'")
        return int(row["n"]) if row else 0

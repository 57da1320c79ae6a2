"""Spend and status aggregates: what the budget, `shd status`, the web page and /metrics read (spend, costs, typical
predict times, progress counts, the event log). Read-only: nothing here writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shd import migrations
from shd.errors import StoreError
from shd.store.connection import Connection


class Reports(Connection):
    """Sums and counts over the ledger, the jobs and the frames, and the event log, as reports read them."""

    # --- spend --------------------------------------------------------------------------------------------------
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

    # --- status -------------------------------------------------------------------------------------------------
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

    # --- read-only queries for the web page and /metrics --------------------------------------------------------
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

"""`shd status`: jobs and their progress, as a table for people and as JSON for scripts (the contract's schema).

Reads through a read-only connection: it never writes and never blocks the daemon. The table shows control
characters in names and reasons as escapes (`\\n`), so every job stays on one line. Spend comes from the ledger:
each finished prediction's cost; today and this month are counted in `budget.timezone` (UTC unless configured).
"""

from __future__ import annotations

import json
import time
from typing import Any

from shd import budget, pricing
from shd.names import printable
from shd.sheet import time_label
from shd.states import UNFINISHED_JOBS, JobState, PairState
from shd.store import Frame, Job, Store


def job_summary(store: Store, job: Job, now: float | None = None) -> dict[str, Any]:
    """One job as the contract's JSON object, plus elapsed/eta seconds (counting FILM's pairs), how many frames were
    filled, and FILM's pairs."""
    now = time.time() if now is None else now
    p = store.progress(job.id)
    total = job.frames_total
    if total is None:
        estimate = round((job.duration or 0) * job.fps) if job.duration else 0
        total = max(p["extracted"], estimate)
    end = job.finished_at or now
    elapsed = round(end - job.started_at, 1) if job.started_at else None
    eta = None
    pairs = pair_summary(store, job.id, total)
    work, finished = total, p["generated"] + p["failed"]
    if pairs:  # FILM: the pairs are work the job waits for too
        work, finished = work + pairs["total"], finished + pairs["interpolated"] + pairs["failed"]
    if job.state in (JobState.EXTRACTING, JobState.RUNNING) and elapsed and finished:
        eta = round((work - finished) * elapsed / finished, 1)
    return {
        "id": job.id,
        "source": job.source_name,
        "state": job.state,
        "frames": {"total": total, "extracted": p["extracted"], "prompted": p["prompted"],
                   "generated": p["generated"], "failed": p["failed"]},
        "filled": p["filled"],
        "output": job.output,
        "error": job.error,
        "elapsed": elapsed,
        "eta": eta,
        "pairs": pairs,
        "cost": store.job_cost(job.id),
        "estimate": None if job.estimate_usd is None else {"usd": job.estimate_usd, "seconds": job.estimate_seconds},
        "held": job.held if job.state in UNFINISHED_JOBS else None,  # a finished job is not held
    }


def pair_summary(store: Store, job_id: str, frames: int) -> dict[str, int] | None:
    """With FILM, the job's gaps between consecutive paintings: how many there are, how many FILM interpolated or
    failed, and how many show a crossfade instead (failed, or a frame was not painted); None for a job without
    pairs (another transition, or none of its paintings has a painted neighbour yet)."""
    counts = store.pair_counts(job_id)
    if not counts:
        return None
    return {"total": max(0, frames - 1), "interpolated": counts.get(PairState.INTERPOLATED, 0),
            "failed": counts.get(PairState.FAILED, 0), "crossfaded": counts["crossfaded"]}


def spend(store: Store, zone: str = "UTC", now: float | None = None) -> dict[str, float]:
    """Dollars spent today, this month (in `zone`) and ever, all jobs."""
    now = time.time() if now is None else now
    tz = budget.zone(zone)
    return {"today_usd": round(store.spent_since(budget.day_start(now, tz)), 6),
            "month_usd": round(store.spent_since(budget.month_start(now, tz)), 6),
            "total_usd": round(store.spent_since(float("-inf")), 6)}


def job_detail(store: Store, job: Job) -> dict[str, Any]:
    """`shd status JOB`: the summary plus each failed frame with its reason and what filled its slot."""
    d = job_summary(store, job)
    d["failed_frames"] = [
        {"frame": f.idx, "time": round(f.ts, 3), "error": f.error, "filled_with": f.filled_with}
        for f in store.frames(job.id, ("failed",))
    ]
    d["failed_pairs"] = [
        {"pair": p.idx, "frames": [p.idx, p.idx + 1], "state": p.state, "error": p.error, "filled_with": p.filled_with}
        for p in store.pairs(job.id) if p.state == PairState.FAILED or p.filled_with
    ]
    d["predictions"] = store.paid(job.id)
    return d


def frame_row(f: Frame) -> dict[str, Any]:
    """One frame for `shd status JOB --frames`: its time in the source, state, prompt, seed, and why it failed and
    what filled its slot."""
    return {"frame": f.idx, "time": round(f.ts, 3), "state": f.state, "prompt": f.prompt, "seed": f.seed,
            "error": f.error, "filled_with": f.filled_with}


def as_json(store: Store, job_ref: str | None = None, *, frames: bool = False, zone: str = "UTC") -> str:
    """The contract's JSON; for one job its detail, and with `frames` each frame (`frame_list`, see frame_row);
    with `spend` (days and months in `zone`)."""
    if job_ref:
        job = store.find_job(job_ref)
        detail = job_detail(store, job)
        if frames:
            detail["frame_list"] = [frame_row(f) for f in store.frames(job.id)]
        jobs = [detail]
    else:
        jobs = [job_summary(store, j) for j in store.jobs()]
    return json.dumps({"jobs": jobs, "spend": spend(store, zone)}, indent=2)


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else pricing.duration(seconds)


def _cost(d: dict[str, Any]) -> str:
    """A job's cost in words: dollars, paid predictions, reused results and what reuse saved, the estimate."""
    c = d["cost"]
    text = f"{pricing.usd(c['usd'])} for {c['predictions']} paid predictions ({c['predict_seconds']:g} s)"
    if c["reused"]:
        text += f", {c['reused']} results reused (saved {pricing.usd(c['saved_usd'])})"
    if d["estimate"]:
        text += f"; estimated {pricing.usd(d['estimate']['usd'])}"
    return text


def _pairs(p: dict[str, int]) -> str:
    """FILM's pairs in words: interpolated of all, failed, crossfaded."""
    return f"{p['interpolated']}/{p['total']} interpolated, {p['failed']} failed, {p['crossfaded']} crossfaded"


def _spend_line(store: Store, zone: str) -> str:
    s = spend(store, zone)
    return (f"spend: today {pricing.usd(s['today_usd'])}, this month {pricing.usd(s['month_usd'])}, "
            f"all time {pricing.usd(s['total_usd'])} ({zone})")


def frames_table(store: Store, job_ref: str) -> str:
    """Each frame of one job on a line: number, time, state, then its prompt (or why it failed), whole."""
    job = store.find_job(job_ref)
    rows = [("FRAME", "TIME", "STATE", "PROMPT")]
    for f in store.frames(job.id):
        text = f.prompt or ""
        if f.state == "failed":
            text = f"{text}  [failed: {f.error or '?'}" + (f"; filled: {f.filled_with}]" if f.filled_with else "]")
        rows.append((str(f.idx), time_label(f.ts), f.state, printable(text)))
    if len(rows) == 1:
        return f"job {job.id} has no frames yet"
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[3]]).rstrip() for r in rows)


def as_table(store: Store, job_ref: str | None = None, *, zone: str = "UTC") -> str:
    if job_ref:
        d = job_detail(store, store.find_job(job_ref))
        fr = d["frames"]
        lines = [
            f"job      {d['id']}",
            f"source   {printable(d['source'])}",
            f"state    {d['state']}" + (f" (held: {d['held']})" if d["held"] else ""),
            f"frames   {fr['generated']}/{fr['total']} generated, {fr['prompted']} prompted, "
            f"{fr['extracted']} extracted, {fr['failed']} failed, {d['filled']} filled",
            *([f"pairs    {_pairs(d['pairs'])}"] if d["pairs"] else []),
            f"elapsed  {_dur(d['elapsed'])}   eta {_dur(d['eta'])}",
            f"cost     {_cost(d)}",
            f"paid     {d['predictions']['by_status']}  predict_time {d['predictions']['predict_time']}s",
        ]
        if d["output"]:
            lines.append(f"output   {printable(d['output'])}")
        if d["error"]:
            lines.append(f"error    {printable(d['error'])}")
        for f in d["failed_frames"]:
            lines.append(f"  frame {f['frame']} @{f['time']}s: {printable(f['error'] or '')}"
                         + (f" (filled: {f['filled_with']})" if f["filled_with"] else ""))
        for p in d["failed_pairs"]:
            lines.append(f"  pair {p['frames'][0]}-{p['frames'][1]}: {printable(p['error'] or '')}"
                         + (f" (filled: {p['filled_with']})" if p["filled_with"] else ""))
        return "\n".join(lines)
    rows = [("ID", "SOURCE", "STATE", "EXTR", "PROMPT", "GEN", "FAIL", "TOTAL", "PAIRS", "ELAPSED", "ETA", "COST",
             "REUSED")]
    held = []
    for j in store.jobs():
        d = job_summary(store, j)
        fr, c = d["frames"], d["cost"]
        rows.append((d["id"], printable(d["source"])[:32], d["state"] + (" (held)" if d["held"] else ""),
                     str(fr["extracted"]), str(fr["prompted"]), str(fr["generated"]), str(fr["failed"]),
                     str(fr["total"]), f"{d['pairs']['interpolated']}/{d['pairs']['total']}" if d["pairs"] else "-",
                     _dur(d["elapsed"]), _dur(d["eta"]), pricing.usd(c["usd"]), str(c["reused"])))
        if d["held"]:
            held.append(f"held {d['id']}: {d['held']}")
    if len(rows) == 1:
        return "no jobs yet"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([*table, *held, _spend_line(store, zone)])

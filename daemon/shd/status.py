"""`shd status`: jobs and their progress, as a table for people and as JSON for scripts (the contract's schema).

Reads through a read-only connection: it never writes and never blocks the daemon. The table shows control
characters in names and reasons as escapes (`\\n`), so every job stays on one line. Spend comes from the ledger:
each finished prediction's cost; today and this month are counted in `budget.timezone` (UTC unless configured).

It tells the truth about who works (liveness.py): the `daemon` object says whether a daemon runs on the state
directory and why it is paused (the credentials, the API, a budget cap); an unfinished job nobody works on is
`interrupted`: its clock stops when the work stopped and it has no ETA, until `shd run` (or, for a `shd process`
job, `shd process` on the same file) resumes it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shd import budget, liveness, pricing
from shd.liveness import Beat
from shd.names import printable
from shd.sheet import time_label
from shd.states import UNFINISHED_JOBS, JobState, PairState, Stage
from shd.store import Frame, Job, Store


@dataclass(frozen=True)
class Who:
    """Who works on the state directory now (`worker`, None if nobody), and the last heartbeat anyone left."""

    worker: Beat | None = None
    last: Beat | None = None

    @classmethod
    def of(cls, state_dir: Path) -> Who:
        return cls(liveness.worker(state_dir), liveness.read_beat(state_dir))

    def interrupted_at(self, store: Store, job: Job) -> float | None:
        """When work on an unfinished job stopped, if nobody works on it now; None if it is finished or worked on."""
        if job.state not in UNFINISHED_JOBS or (self.worker is not None and self.worker.works_on(job.id)):
            return None
        stopped = store.last_activity(job.id)
        if self.last is not None and self.last.works_on(job.id):
            stopped = max(stopped, self.last.at)
        return stopped


WORKING = Who(Beat(0, "daemon", 0.0))  # the daemon's own view (the web page): every job is worked on


def daemon_object(worker: Beat | None) -> dict[str, Any]:
    """The contract's top-level `daemon` object: whether a daemon holds the state directory now, its pid, and why it
    creates no predictions if it is paused (the same reason STATUS=, the web page and the daemon.paused hook give)."""
    running = worker is not None and worker.kind == "daemon"
    return {"running": running, "pid": worker.pid if worker is not None and running else None,
            "paused": worker.reason if worker is not None and running else None}


def job_summary(store: Store, job: Job, now: float | None = None, who: Who = WORKING) -> dict[str, Any]:
    """One job as the contract's JSON object, plus elapsed/eta seconds (FILM's pairs counted), how many frames were
    filled, FILM's pairs, and whether it is interrupted (unfinished, and nobody works on it: its clock stops, no
    ETA)."""
    now = time.time() if now is None else now
    p = store.progress(job.id)
    total = job.frames_total
    if total is None:
        estimate = round((job.duration or 0) * job.fps) if job.duration else 0
        total = max(p["extracted"], estimate)
    stopped = who.interrupted_at(store, job)
    end = job.finished_at or stopped or now
    elapsed = round(max(0.0, end - job.started_at), 1) if job.started_at else None
    eta = None
    pairs = pair_summary(store, job.id, total)
    work, finished = total, p["generated"] + p["failed"]
    if pairs:  # FILM: the pairs are work the job waits for too
        work, finished = work + pairs["total"], finished + pairs["interpolated"] + pairs["failed"]
    if job.state in (JobState.EXTRACTING, JobState.RUNNING) and elapsed and finished and stopped is None:
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
        "interrupted": stopped is not None,
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


def job_detail(store: Store, job: Job, who: Who = WORKING) -> dict[str, Any]:
    """`shd status JOB`: the summary plus each failed frame with its reason and what filled its slot."""
    d = job_summary(store, job, who=who)
    d["failed_frames"] = [
        {"frame": f.idx, "time": round(f.ts, 3), "error": f.error, "filled_with": f.filled_with}
        for f in store.frames(job.id, ("failed",))
    ]
    d["failed_pairs"] = [
        {"pair": p.idx, "frames": [p.idx, p.idx + 1], "state": p.state, "error": p.error, "filled_with": p.filled_with}
        for p in store.pairs(job.id) if p.state == PairState.FAILED or p.filled_with
    ]
    paid = store.paid(job.id)
    # Creates turned away (429, 401) or that never reached the server: recorded, but not paid and not attempts; and
    # results reused instead of paying (no call at all: `cost` counts them and what they saved).
    paid["refused"] = paid["by_status"].pop("refused", 0)
    paid["reused"] = paid["by_status"].pop("reused", 0)
    d["predictions"] = paid
    return d


def frame_row(f: Frame) -> dict[str, Any]:
    """One frame for `shd status JOB --frames`: its time in the source, state, prompt, seed, and why it failed and
    what filled its slot."""
    return {"frame": f.idx, "time": round(f.ts, 3), "state": f.state, "prompt": f.prompt, "seed": f.seed,
            "error": f.error, "filled_with": f.filled_with}


def frame_costs(store: Store, job_id: str) -> dict[int, float]:
    """What each frame of a job has cost so far: its prompt's and its painting's finished predictions, retries
    included (a reuse costs nothing; FILM's pairs lie between frames and are counted on the job only)."""
    costs: dict[int, float] = {}
    for p in store.predictions(job_id):
        if p.stage != Stage.FILM:
            costs[p.frame_idx] = costs.get(p.frame_idx, 0.0) + (p.cost_usd or 0.0)
    return costs


def as_json(store: Store, job_ref: str | None = None, *, frames: bool = False, state_dir: Path | None = None,
            zone: str = "UTC") -> str:
    """The contract's JSON, with its `daemon` object (who works on `state_dir`) and `spend` (days and months in
    `zone`); for one job its detail, and with `frames` each frame (`frame_list`, see frame_row)."""
    who = Who.of(state_dir) if state_dir is not None else WORKING
    daemon = daemon_object(who.worker)
    if job_ref:
        job = store.find_job(job_ref)
        detail = job_detail(store, job, who)
        if frames:
            costs = frame_costs(store, job.id)
            detail["frame_list"] = [{**frame_row(f), "cost_usd": round(costs.get(f.idx, 0.0), 6)}
                                    for f in store.frames(job.id)]
        jobs = [detail]
    else:
        jobs = [job_summary(store, j, who=who) for j in store.jobs()]
    return json.dumps({"daemon": daemon, "jobs": jobs, "spend": spend(store, zone)}, indent=2)


def _state(d: dict[str, Any]) -> str:
    return f"{d['state']} (interrupted)" if d["interrupted"] else str(d["state"])


def daemon_line(who: Who, state_dir: Path, unfinished: int) -> str:
    """One line on who works on the state directory, and why nothing is being created if it is paused."""
    w = who.worker
    if w is not None and w.kind == "daemon":
        line = f"daemon   running (pid {w.pid})"
        return line + (f"; paused: {w.reason}" if w.reason else "")
    line = f"daemon   not running on {state_dir}"
    if w is not None:
        line += f"; `shd process` (pid {w.pid}) works on job {', '.join(w.jobs or ())}"
        line += f"; paused: {w.reason}" if w.reason else ""
    elif unfinished:
        line += f"; {unfinished} unfinished job(s) are interrupted: `shd run` resumes them"
    return line


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
    """Each frame of one job on a line: number, time, state, cost so far, then its prompt (or why it failed),
    whole."""
    job = store.find_job(job_ref)
    costs = frame_costs(store, job.id)
    rows = [("FRAME", "TIME", "STATE", "COST", "PROMPT")]
    for f in store.frames(job.id):
        text = f.prompt or ""
        if f.state == "failed":
            text = f"{text}  [failed: {f.error or '?'}" + (f"; filled: {f.filled_with}]" if f.filled_with else "]")
        rows.append((str(f.idx), time_label(f.ts), f.state, pricing.usd(costs.get(f.idx, 0.0)), printable(text)))
    if len(rows) == 1:
        return f"job {job.id} has no frames yet"
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[4]]).rstrip() for r in rows)


def as_table(store: Store, job_ref: str | None = None, state_dir: Path | None = None, *, zone: str = "UTC") -> str:
    who = Who.of(state_dir) if state_dir is not None else WORKING
    if job_ref:
        job = store.find_job(job_ref)
        d = job_detail(store, job, who)
        fr = d["frames"]
        # A daemon's job (its file moved into the state directory) is resumed by the daemon only.
        resumes = "`shd run` (or `shd process` on the same file)" if job.mode == "process" else "`shd run`"
        lines = [
            f"job      {d['id']}",
            f"source   {printable(d['source'])}",
            f"state    {_state(d)}" + (f" (held: {d['held']})" if d["held"] else "")
            + (f": nobody works on it; {resumes} resumes it" if d["interrupted"] else ""),
            f"frames   {fr['generated']}/{fr['total']} generated, {fr['prompted']} prompted, "
            f"{fr['extracted']} extracted, {fr['failed']} failed, {d['filled']} filled",
            *([f"pairs    {_pairs(d['pairs'])}"] if d["pairs"] else []),
            f"elapsed  {_dur(d['elapsed'])}   eta {_dur(d['eta'])}",
            f"cost     {_cost(d)}",
            f"paid     {d['predictions']['by_status']}  predict_time {d['predictions']['predict_time']}s"
            + (f"  ({d['predictions']['refused']} create(s) turned away or never sent: not paid)"
               if d["predictions"]["refused"] else ""),
        ]
        if state_dir is not None and who.worker is not None and who.worker.works_on(d["id"]) and who.worker.reason:
            lines.append(f"paused   {printable(who.worker.reason)}")
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
    unfinished = 0
    held = []
    for j in store.jobs():
        d = job_summary(store, j, who=who)
        unfinished += d["interrupted"]
        fr, c = d["frames"], d["cost"]
        rows.append((d["id"], printable(d["source"])[:32], _state(d) + (" (held)" if d["held"] else ""),
                     str(fr["extracted"]), str(fr["prompted"]), str(fr["generated"]), str(fr["failed"]),
                     str(fr["total"]), f"{d['pairs']['interpolated']}/{d['pairs']['total']}" if d["pairs"] else "-",
                     _dur(d["elapsed"]), _dur(d["eta"]), pricing.usd(c["usd"]), str(c["reused"])))
        if d["held"]:
            held.append(printable(f"held {d['id']}: {d['held']}"))
    head = [printable(daemon_line(who, state_dir, unfinished))] if state_dir is not None else []
    if len(rows) == 1:
        return "\n".join(head + ["no jobs yet"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([*head, *table, *held, _spend_line(store, zone)])

"""The JSON the pages read: `/api/status` (the overview) and `/api/jobs/<id>` (one job and its frames).

Jobs are `shd status --json` objects (`shd.status.job_summary`), so the page, the CLI and scripts agree; what later
issues add there (a job's `cost`) reaches the page by itself. URLs in these documents carry job ids and frame
numbers only.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from shd.live import DaemonView
from shd.states import UNFINISHED_JOBS, FrameState
from shd.liveness import Beat
from shd.status import daemon_object, frame_row, job_summary
from shd.store import Frame, Job, Store

RECENT = 20     # finished jobs shown on the overview
SLACK = 5.0     # seconds: `since` reaches back this far, so a commit stamped just before a poll is never missed


def overview(store: Store, view: DaemonView, *, actions: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "daemon": daemon_object(Beat.this_daemon(view.paused())),  # the page is served by the daemon itself
        "actions": actions,
        "in_flight": view.in_flight(),
        "jobs": [job_summary(store, j) for j in store.jobs(tuple(UNFINISHED_JOBS))],
        "recent": [job_summary(store, j) for j in store.finished_jobs(RECENT)],
        "inbox": [asdict(f) for f in view.inbox()],
    }
    spend = view.spend()
    if spend is not None:
        doc["spend"] = dict(spend)
    return doc


def frame_doc(f: Frame) -> dict[str, Any]:
    base = f"/jobs/{f.job_id}/frames/{f.idx}"
    return {**frame_row(f), "source": f"{base}/source",
            "painted": f"{base}/painted" if f.image_path and f.state == FrameState.GENERATED else None,
            "version": int(f.updated_at * 1000)}


def job_doc(store: Store, job: Job, *, since: float | None, video: bool, subtitles: bool,
            actions: bool) -> dict[str, Any]:
    """The job (as `shd status JOB --json` has it) and its frames: all of them, or with `since` (the `cursor` of
    an earlier answer) only those changed after it. `video`/`subtitles`: whether the output and its .vtt can be
    served."""
    cursor = time.time()  # taken before reading: a frame changed while this runs comes again next time
    frames = store.frames(job.id) if since is None else store.frames_changed(job.id, since - SLACK)
    return {
        "job": job_summary(store, job),
        "actions": actions,
        "video": f"/jobs/{job.id}/video" if video else None,
        "subtitles": f"/jobs/{job.id}/subtitles.vtt" if subtitles else None,
        "cursor": cursor,
        "frames": [frame_doc(f) for f in frames],
    }

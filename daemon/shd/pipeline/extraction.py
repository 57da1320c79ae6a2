"""A job's frames: probe and estimate its source, then extract one frame per `1/fps` seconds, each recorded and
offered to the scheduler as it is decoded.

Size guard (`pipeline.max_frames`): a source whose header promises more frames is refused before extraction; one
that decodes into more than its header promised is refused as soon as extraction passes the limit, and its frames
past the promise wait for the count before anything is paid for them. Either way nothing is paid beyond the frames
the header promised, and a refused file is moved aside with its frame count and estimate.

Frames recorded by an interrupted run are kept and not extracted twice; every run extracts under a scratch folder of
its own.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from shd import estimate, media, pricing
from shd.errors import InputError, MediaError, ShdError
from shd.pipeline.context import JobContext, JobLeft
from shd.pipeline.painting import offer_unfinished
from shd.scheduler import Task
from shd.states import Stage
from shd.store import Job


def extract(ctx: JobContext, job: Job, log: Any) -> None:
    src = Path(job.source_path or job.origin_path)
    probe = media.probe(ctx.ffmpeg, src)
    ctx.store.update_job(job.id, duration=probe.duration, width=probe.width, height=probe.height,
                         has_audio=int(probe.has_audio))
    log.info("probed", duration=probe.duration, size=f"{probe.width}x{probe.height}", audio=probe.has_audio,
             sar=f"{probe.sar[0]}:{probe.sar[1]}")
    promised = media.frame_count(probe.duration, job.fps)
    est = _estimate(ctx, job, promised, log)
    if promised > ctx.cfg.pipeline.max_frames:
        raise InputError(src, estimate.over_limit(ctx.cfg, str(promised), est, "by its header"))
    work = Path(job.work_dir)
    frames_dir = work / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    # Frames recorded by an interrupted run are kept (their prompts may be paid for); resume their work now.
    offer_unfinished(ctx, job.id, below=promised)
    # A scratch folder of this run's own (an earlier run's ffmpeg was stopped above; its folder goes).
    for old in work.glob("extract.*"):
        shutil.rmtree(old, ignore_errors=True)
    scratch = work / f"extract.{secrets.token_hex(4)}"
    scratch.mkdir(parents=True)

    def on_frame(index: int, path: Path) -> None:
        if index >= ctx.cfg.pipeline.max_frames:
            over = estimate.for_frames(ctx.cfg, index + 1, ctx.store)
            raise InputError(src, estimate.over_limit(ctx.cfg, f"more than {index}", over,
                                                      f"decoded; its header promised {promised}"))
        final = frames_dir / f"{index:06d}.png"
        if _known_frame(ctx, job.id, index):
            path.unlink(missing_ok=True)
            return
        os.replace(path, final)
        ts = media.frame_timestamp(index, job.fps)  # seconds from the start of the source
        # A frame past what the header promised waits for the count (the job's next step offers it).
        if ctx.store.add_frame(job.id, index, ts, final) and index < promised:
            ctx.engine.enqueue(Task(job.id, index, Stage.PROMPT))

    def should_stop() -> bool:
        return ctx.engine.stopping or ctx.gone(job.id) or ctx.give_up() is not None

    try:
        count = media.extract(ctx.ffmpeg, src, scratch, job.fps, on_frame, timeout=ctx.cfg.ffmpeg.timeout,
                              should_stop=should_stop,
                              size=None if probe.sar == (1, 1) else (probe.width, probe.height))
    except MediaError:
        why = ctx.give_up()
        if why is not None:
            raise JobLeft(why) from None
        raise
    finally:  # also when the input turns out truncated or bad: no scratch folder is left behind
        shutil.rmtree(scratch, ignore_errors=True)
    ctx.store.update_job(job.id, frames_total=count)
    log.info("extracted", frames=count)
    if count != promised:
        _estimate(ctx, job, count, log)


def _estimate(ctx: JobContext, job: Job, frames: int, log: Any) -> pricing.Estimate:
    """Estimate the job (before its first paid call: a job over budget.per_job_usd is held on it), record and
    log it, and tell `shd process`."""
    est = estimate.for_frames(ctx.cfg, frames, ctx.store)
    ctx.store.update_job(job.id, estimate_usd=round(est.usd, 6), estimate_seconds=round(est.seconds, 1))
    log.info("job_estimate", frames=frames, predictions=est.predictions, usd=round(est.usd, 4),
             seconds=round(est.seconds), estimate=est.summary())
    if ctx.on_estimate is not None:
        ctx.on_estimate(job, est)
    return est


def _known_frame(ctx: JobContext, job_id: str, index: int) -> bool:
    try:
        ctx.store.frame(job_id, index)
        return True
    except ShdError:
        return False

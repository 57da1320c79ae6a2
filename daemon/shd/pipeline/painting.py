"""A job's paid stages, seen from the job: its unfinished frames (and, with FILM, pairs) offered to the scheduler,
and the wait until every one is painted or failed. The scheduler (scheduler/) does the painting.
"""

from __future__ import annotations

import time

from shd import gaps
from shd.pipeline.context import JobContext, JobInterrupted, JobLeft
from shd.scheduler import Task
from shd.states import FINISHED_PAIRS, STAGE_FOR, FrameState, JobState, PairState, Stage
from shd.store import Job

REOFFER_EVERY = 30.0  # seconds between unprompted re-offers of a running job's unfinished frames
# A waiting job wakes at once when a frame finishes or the engine stops; this bounds how late it notices what
# another process did (`shd cancel`, `shd retry`). Each wake-up reads the store: not more often than this.
WAKE_EVERY = 3.0


def offer_unfinished(ctx: JobContext, job_id: str, below: int | None = None) -> None:
    """Offer the engine every unfinished frame (of those before `below`, when given) and, with FILM, every pair
    whose paintings exist and that is not interpolated or failed yet (recording the ones a restart or a reload
    left unrecorded)."""
    frames = ctx.store.frames(job_id)
    for f in frames:
        stage = STAGE_FOR[FrameState(f.state)]
        if stage is not None and (below is None or f.idx < below):
            ctx.engine.enqueue(Task(job_id, f.idx, stage))
    if ctx.cfg.output.film:
        ctx.store.add_pairs(job_id, gaps.ready([f.state == FrameState.GENERATED for f in frames]))
        for p in ctx.store.pairs(job_id):
            if p.state not in FINISHED_PAIRS:
                ctx.engine.enqueue(Task(job_id, p.idx, Stage.FILM))


def wait_for_frames(ctx: JobContext, job: Job) -> None:
    """Until every frame is painted or failed and, with FILM, every pair of paintings interpolated or failed."""
    next_offer = 0.0
    pairs_offered = False
    while True:
        if ctx.engine.stopping:
            raise JobInterrupted
        state = ctx.store.job(job.id).state
        if state != JobState.RUNNING:
            raise JobInterrupted
        counts = ctx.store.frame_counts(job.id)
        total = sum(counts.values())
        unfinished = total - counts.get(FrameState.GENERATED, 0) - counts.get(FrameState.FAILED, 0)
        if ctx.cfg.output.film:
            pairs = ctx.store.pair_counts(job.id)
            unfinished += pairs.get(PairState.PAINTED, 0) + pairs.get(PairState.INTERPOLATING, 0)
        if unfinished <= 0:
            if ctx.cfg.output.film and not pairs_offered:
                # Once: record the pairs a reload to FILM (or anything else) left unrecorded, and wait for them.
                offer_unfinished(ctx, job.id)
                pairs_offered = True
                continue
            return
        why = ctx.give_up()
        if why is not None:
            raise JobLeft(why)
        # Frames reset by `shd retry` while the job runs are unfinished but unknown to the engine: offer the
        # unfinished frames again (the engine ignores ones it has) when it holds fewer of this job's tasks than
        # that, and as a safety net every REOFFER_EVERY s. Not on every wake-up: that would read every frame.
        now = time.monotonic()
        if unfinished > ctx.engine.queued(job.id) or now >= next_offer:
            offer_unfinished(ctx, job.id)
            next_offer = now + REOFFER_EVERY
        with ctx.engine.frame_done:
            if not ctx.engine.stopping:  # checked under the lock: a stop cannot slip in before the wait
                ctx.engine.frame_done.wait(timeout=WAKE_EVERY)

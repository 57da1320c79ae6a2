"""A job's video, assembled from its frames once every one is painted or failed: the failed frames' slots filled by
policy (fill.py), with FILM the pictures between paintings (gaps.py), stitched, checked (it decodes to the end, it
lasts as long as the source) and only then staged with its sidecars in `<job folder>/publish/` (outputs.py).
A staged video is never stitched again; every run stitches under names of its own.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from shd import gaps, inbetweens, media, outputs, png
from shd.errors import MediaError
from shd.fill import Slot, plan_fill
from shd.pipeline.context import JobContext
from shd.states import FrameState, PairState
from shd.store import Job


def stitch(ctx: JobContext, job: Job, log: Any) -> tuple[Path, dict[str, Path]]:
    """The job's verified video and its sidecars, staged in its folder (made now unless an earlier run staged
    them already)."""
    work = Path(job.work_dir)
    done = outputs.staged(work / "publish")
    if done is not None:
        return done
    frames = ctx.store.frames(job.id)
    if not frames:
        raise MediaError(job.source_name, "no frames to stitch")
    slots = plan_fill([f.state == FrameState.GENERATED for f in frames], ctx.cfg.pipeline.on_frame_failure)
    for old in work.glob("stitch.*"):
        shutil.rmtree(old, ignore_errors=True)
    run_dir = work / f"stitch.{secrets.token_hex(4)}"  # this run's own names: nothing else writes here
    seq = run_dir / "frames"
    seq.mkdir(parents=True)
    try:
        fills: dict[int, str] = {}
        for slot in slots:
            src_frame = frames[slot.from_index]
            painted = src_frame.image_path if slot.kind == "generated" else None
            picture = Path(painted or src_frame.path)
            if slot.filled:
                fills[slot.index] = (f"held frame {slot.from_index}" if slot.kind == "generated"
                                     else "source frame")
            _place(ctx, picture, seq / f"{slot.index:06d}.png")
        if fills:
            ctx.store.set_filled(job.id, fills)
            log.warning("frames_filled", count=len(fills), policy=ctx.cfg.pipeline.on_frame_failure)
            frames = ctx.store.frames(job.id)  # with how each slot was filled, for prompts.csv
        audio = (Path(job.source_path or job.origin_path)
                 if ctx.cfg.pipeline.audio == "auto" and job.has_audio else None)
        between = _between(ctx, job, slots, seq, run_dir / "between", log) if ctx.cfg.output.film else None
        video = outputs.Video(seq, job.fps, job.duration or len(frames) / job.fps,
                              media.output_size(job.width or 2, job.height or 2), audio, between)
        done = outputs.make(ctx.ffmpeg, ctx.cfg, run_dir, work / "publish", frames, slots, video)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    log.info("stitched", frames=len(slots), transition=ctx.cfg.output.transition)
    return done


def _between(ctx: JobContext, job: Job, slots: list[Slot], seq: Path, folder: Path, log: Any) -> list[list[Path]]:
    """With FILM, the pictures between each slot's picture (in `seq`) and the next's (gaps.py): FILM's, from
    its pair's clip, or a crossfade made here, recorded on the pair with the reason (shown in status)."""
    pairs = {p.idx: p for p in ctx.store.pairs(job.id)}
    plan = gaps.plan(slots, {i for i, p in pairs.items() if p.state == PairState.INTERPOLATED},
                     {i: p.error for i, p in pairs.items()})
    count = 2 ** ctx.cfg.output.times_to_interpolate - 1
    timeout = ctx.cfg.ffmpeg.timeout
    between: list[list[Path]] = []
    fills: dict[int, tuple[str, str]] = {}
    for gap in plan:
        where = folder / f"{gap.index:06d}"
        why = gap.why or ""
        if gap.film:
            try:
                clip = Path(str(pairs[gap.index].clip_path))
                between.append(inbetweens.between(ctx.ffmpeg, clip, where, timeout=timeout))
                continue
            except MediaError as e:
                why = f"its clip cannot be read ({e.reason})"
        fills[gap.index] = (gaps.CROSSFADE, why)
        first, second = seq / f"{gap.index:06d}.png", seq / f"{gap.index + 1:06d}.png"
        with first.open("rb") as fh:
            size = png.size(fh.read(24)) or media.output_size(job.width or 2, job.height or 2)
        between.append(inbetweens.blend(ctx.ffmpeg, first, second, where, count=count, size=size,
                                        fit=ctx.cfg.pipeline.fit, timeout=timeout) if gap.blend else [])
    if fills:
        ctx.store.set_pair_fills(job.id, fills)
        log.warning("pairs_crossfaded", count=len(fills), first=min(fills), reason=fills[min(fills)][1])
    return between


def _place(ctx: JobContext, picture: Path, dest: Path) -> None:
    if picture.suffix.lower() == ".png":
        media.link_or_copy(picture, dest)
    else:  # JPEG/WebP output: convert so the image sequence is uniform PNG.
        media.to_png(ctx.ffmpeg, picture, dest, timeout=60)

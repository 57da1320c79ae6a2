"""A job's staged set (its video and sidecars in `<job folder>/publish/`, assembly.py) given its names: its outbox
stem, or its `--output`, through `publish.py` (crash-safe through `publish/journal`). A set staged before the job
went back to painting (a done job's retry) is of other frames: it is thrown away (an interrupted publish of it
undone) and made again. A set published the very moment its job was canceled is taken back.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from shd import outputs, perms, publish
from shd.errors import DiskError, OutputExists
from shd.pipeline.context import JobContext
from shd.states import JobState
from shd.store import Job, Store

VIDEO_SUFFIX = ".mp4"  # of a video published to the outbox


def _video_suffix(job: Job) -> str:
    """The suffix the job's video is published with: its recorded output's, its `--output`'s, else `.mp4`."""
    named = job.output or job.output_target
    return Path(named).suffix if named else VIDEO_SUFFIX


def _files(job: Job, staged: tuple[Path, dict[str, Path]]) -> dict[str, Path]:
    """The staged set as published: suffix -> staged file (an --output ending like a sidecar takes its place)."""
    video, sidecar_files = staged
    return {**sidecar_files, _video_suffix(job): video}


def discard_staged(job: Job) -> None:
    """Remove what an earlier run staged in `publish/` (a crash after the job was recorded done left it; a done
    job's retry repaints frames): it is made again from the frames as they are now. A publish of it that was
    interrupted is undone first, so none of its files stays in the outbox without the others."""
    publish_dir = Path(job.work_dir) / "publish"
    old = outputs.staged(publish_dir)
    if old is not None:
        publish.abandon(_files(job, old), publish_dir / "journal")
    shutil.rmtree(publish_dir, ignore_errors=True)


def publish_staged(ctx: JobContext, job: Job,
                   staged: tuple[Path, dict[str, Path]]) -> tuple[Path, dict[str, Path] | None]:
    """Give the staged video and its sidecars their names: `--output FILE` (the sidecars beside it, same stem),
    else the first free `<stem>[-N]` in the outbox for the whole set. A job published before (`shd retry` of a
    done job) replaces its set in place, under the same names, unless another job has published under that
    stem since (the user moved the old files away): then it takes a free name, as a first publish does.
    Returns the video's path, and the set (suffix -> path) when it was published under a new name."""
    video, sidecar_files = staged
    suffix = _video_suffix(job)
    files = _files(job, staged)
    if job.output and not _stem_taken(ctx.store, job):
        old = Path(job.output)
        perms.make_folder(old.parent)
        done = publish.republish(files, old.with_name(old.name[:len(old.name) - len(old.suffix)]),
                                 video=suffix, journal=video.with_name("journal"), mode=perms.output_mode())
        return done[suffix], None
    bases: Iterable[Path]
    if job.output_target:
        target = Path(job.output_target)
        folder, bases = target.parent, [target.with_name(target.name[:len(target.name) - len(suffix)])]
    else:
        folder = ctx.cfg.paths.outbox
        bases = publish.candidates(folder, Path(job.source_name).stem, files)
        if not folder.is_dir() and not folder.parent.is_dir():  # not made again on the root file system
            raise DiskError(f"{folder}: the outbox is gone, and the folder it was in too (an unmounted share?); "
                            f"the finished video waits in {video.parent} and is published once it is back")
    perms.make_folder(folder)
    try:
        done = publish.publish(files, bases, video=suffix, journal=video.with_name("journal"),
                               overwrite=bool(job.overwrite), mode=perms.output_mode())
    except FileExistsError:
        raise OutputExists(job.output_target or folder, f"the finished video is kept in {video}: move that "
                           f"file away, then `shd retry {job.id}` publishes it") from None
    return done[suffix], done


def withdraw(job: Job, staged: tuple[Path, dict[str, Path]], fresh: dict[str, Path]) -> None:
    """Take back a set `publish_staged` has just published under a new name (its job was canceled meanwhile)."""
    publish.withdraw(fresh, _files(job, staged), video=_video_suffix(job))


def _stem_taken(store: Store, job: Job) -> bool:
    """Whether another job has published under the stem of this job's recorded output."""
    assert job.output is not None
    old = Path(job.output)
    stem = old.with_name(old.name[:len(old.name) - len(old.suffix)])
    for other in store.jobs((JobState.DONE,)):
        if other.id != job.id and other.output:
            theirs = Path(other.output)
            if theirs.with_name(theirs.name[:len(theirs.name) - len(theirs.suffix)]) == stem:
                return True
    return False

"""A finished job's files, made in its folder and staged for publishing: the video and its sidecars.

`make()` writes everything into the run folder it is given: the prompts (`prompts.csv`), the subtitles (`.srt`,
`.vtt`), the video (the .srt inside it as a soft subtitle track unless `output.subtitles` is off; then verified)
and the contact sheet (sheet.py). Only then are they moved into `publish/` (each fsynced), the video last: a
staged video means a complete set, so `staged()` finds it after a crash and the job is published without making
anything again. `publish.publish` then gives the set one stem in the outbox, the video last again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shd import media, sheet, sidecars
from shd.config import Config
from shd.fill import Slot
from shd.store import Frame

VIDEO = "video"  # the staged video's name in publish/ (its suffix is the published name's)
# suffix of the published file -> its staged name in publish/
SIDECARS = {".prompts.csv": "prompts.csv", ".srt": "prompts.srt", ".vtt": "prompts.vtt", ".sheet.png": "sheet.png"}


@dataclass(frozen=True)
class Video:
    """What the video is made of: slot i shows `pictures/NNNNNN.png` from frame i's time, `duration` s in all."""

    pictures: Path
    fps: float
    duration: float
    size: tuple[int, int]
    audio: Path | None


def beside(video: Path) -> list[Path]:
    """`video` and the names its sidecars get beside it (`clip.mp4` -> `clip.prompts.csv`, `clip.srt`...)."""
    stem = video.with_name(video.name[:len(video.name) - len(video.suffix)])
    return [video, *(stem.with_name(stem.name + suffix) for suffix in SIDECARS if suffix != video.suffix)]


def staged(publish_dir: Path) -> tuple[Path, dict[str, Path]] | None:
    """The staged video and its sidecars (suffix -> file) if a complete set is staged in `publish_dir`, else None.
    (A video staged before shd wrote sidecars comes with none.)"""
    video = publish_dir / VIDEO
    if not video.exists():
        return None
    return video, {suffix: publish_dir / name for suffix, name in SIDECARS.items() if (publish_dir / name).exists()}


def make(ffmpeg: str, cfg: Config, run_dir: Path, publish_dir: Path, frames: Sequence[Frame],
         slots: Sequence[Slot], video: Video) -> tuple[Path, dict[str, Path]]:
    """Make the video and its sidecars in `run_dir` and stage them in `publish_dir` (see the module docstring).
    `frames` are the job's frames with their prompts, seeds and fills; `slots` what each slot shows.
    MediaError or DiskFull as media.stitch and media.verify raise them."""
    cues = sidecars.cues(frames, slots, video.duration)
    texts = {"prompts.csv": sidecars.prompts_csv(frames), "prompts.srt": sidecars.srt(cues),
             "prompts.vtt": sidecars.vtt(cues)}
    for name, text in texts.items():
        (run_dir / name).write_text(text, encoding="utf-8", newline="")
    out = run_dir / "video.mp4"
    media.stitch(ffmpeg, video.pictures, fps=video.fps, duration=video.duration, size=video.size, out=out,
                 audio_src=video.audio, fit=cfg.pipeline.fit, out_fps=cfg.pipeline.output_fps,
                 crf=cfg.pipeline.crf, transition=cfg.output.transition,
                 transition_seconds=cfg.output.transition_seconds,
                 subtitles=run_dir / "prompts.srt" if cfg.output.subtitles and cues else None,
                 timeout=cfg.ffmpeg.timeout)
    media.verify(ffmpeg, out, duration=video.duration, tolerance=2 / cfg.pipeline.output_fps + 0.05,
                 timeout=cfg.ffmpeg.timeout)
    _contact_sheet(ffmpeg, cfg, run_dir, frames, slots, video)
    publish_dir.mkdir(exist_ok=True)
    for name in SIDECARS.values():
        _stage(run_dir / name, publish_dir / name)
    _stage(out, publish_dir / VIDEO)
    done = staged(publish_dir)
    assert done is not None  # just staged
    return done


def _contact_sheet(ffmpeg: str, cfg: Config, run_dir: Path, frames: Sequence[Frame],
                   slots: Sequence[Slot], video: Video) -> None:
    """`run_dir/sheet.png`: each sampled slot's source frame beside the picture the video shows there."""
    chosen = sheet.sample(len(slots))
    lay = sheet.layout(len(chosen), video.size[0] / video.size[1])
    folders = [run_dir / "sheet" / part for part in ("sources", "paintings", "labels")]
    for folder in folders:
        folder.mkdir(parents=True)
    sources, paintings, labels = folders
    for k, i in enumerate(chosen):
        name = f"{k:06d}.png"
        _link(Path(frames[i].path), sources / name)
        _link(video.pictures / f"{i:06d}.png", paintings / name)
        (labels / name).write_bytes(sheet.label(sheet.time_label(frames[i].ts), lay.cell[0], filled=slots[i].filled))
    argv = sheet.plan(ffmpeg, sources, paintings, labels, run_dir / "sheet.png", lay, media.GLOBAL_ARGS)
    media.run(argv, timeout=cfg.ffmpeg.timeout, path_for_errors=run_dir / "sheet.png", check=True, folder=run_dir)


def _link(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _stage(src: Path, dest: Path) -> None:
    with src.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(src, dest)

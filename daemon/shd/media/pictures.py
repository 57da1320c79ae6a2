"""One picture at a time: fitted to a size (pad, crop, stretch; the filter stitching uses too), converted to PNG,
complete or not at all; and a file linked, or copied, to a second name."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python

from shd.media.runner import GLOBAL_ARGS, _compile, run

FITS = ("pad", "crop", "stretch")


def _fit(stream: Any, size: tuple[int, int], fit: str) -> Any:
    """Scale a stream of any size to exactly `size`: letterbox ("pad"), cover and centre-crop ("crop") or
    ignore the aspect ("stretch"); square pixels."""
    w, h = size
    if fit == "pad":
        stream = stream.filter("scale", w, h, force_original_aspect_ratio="decrease", force_divisible_by=2)
        stream = stream.filter("pad", w, h, "(ow-iw)/2", "(oh-ih)/2", color="black")
    elif fit == "crop":
        stream = stream.filter("scale", w, h, force_original_aspect_ratio="increase")
        stream = stream.filter("crop", w, h)
    elif fit == "stretch":
        stream = stream.filter("scale", w, h)
    else:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, not {fit!r}")
    return stream.filter("setsar", 1)


def plan_png(ffmpeg: str, picture: Path, dest: Path) -> list[str]:
    """Convert one picture (a painted frame that came back as JPEG or WebP) to the PNG `dest`, so that the sequence
    to stitch is PNG throughout."""
    return [ffmpeg, *GLOBAL_ARGS, "-i", str(picture), str(dest)]


def plan_fit_picture(ffmpeg: str, picture: Path, dest: Path, *, size: tuple[int, int], fit: str) -> list[str]:
    """`picture` fitted to `size` by `fit` as the one PNG `dest` (the source frame SDXL paints over, img2img)."""
    stream = _fit(ffmpeg_python.input(str(picture)), size, fit).filter("format", "rgb24")
    return _compile(stream.output(str(dest), vframes=1, f="image2", update=1), ffmpeg)


def fit_picture(ffmpeg: str, picture: Path, dest: Path, *, size: tuple[int, int], fit: str, timeout: float) -> None:
    """Write `picture` fitted to `size` as the PNG `dest`, complete or not at all (`_make_picture`)."""
    _make_picture(lambda made: plan_fit_picture(ffmpeg, picture, made, size=size, fit=fit), picture, dest, timeout)


def to_png(ffmpeg: str, picture: Path, dest: Path, *, timeout: float) -> None:
    """Write `picture` (a JPEG or WebP painting) as the PNG `dest`, complete or not at all (`_make_picture`)."""
    _make_picture(lambda made: plan_png(ffmpeg, picture, made), picture, dest, timeout)


def _make_picture(plan: Callable[[Path], list[str]], picture: Path, dest: Path, timeout: float) -> None:
    """Run `plan(made)` in a folder of its own next to `dest` (where ffmpeg is recorded while it runs), then rename
    what it made to `dest`. MediaError(picture, ...) if ffmpeg fails, DiskFull if it ran out of space."""
    with tempfile.TemporaryDirectory(prefix=".shd-picture-", dir=dest.parent) as tmp:
        made = Path(tmp) / "picture.png"
        run(plan(made), timeout=timeout, path_for_errors=picture, check=True, folder=Path(tmp))
        os.replace(made, dest)


def link_or_copy(src: Path, dest: Path) -> None:
    """`src` also as `dest`: a hard link, or a copy where the two are on different file systems."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)

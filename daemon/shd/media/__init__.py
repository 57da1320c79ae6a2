"""Everything shd asks of ffmpeg: probe a source, extract its frames, stitch painted frames back into a video.

Commands are data: the pure ``plan_*`` functions return argv lists (built with ffmpeg-python), ``parse_probe`` turns
``ffmpeg -i`` stderr into a `Probe`, and one runner (`run`, or the streaming loop in `extract`) executes them, as
children (`shd.children`: no credentials in their environment, stopped with shd). A failed write for lack of space
raises DiskFull, never an error about the input (`shd.diskfull`). `verify` checks a stitched file decodes to the
end and lasts as long as it should before anyone publishes it.
Only the ``ffmpeg`` binary is needed (no ffprobe); `find_ffmpeg` falls back to the one imageio-ffmpeg ships.

Timing facts, measured with ffmpeg 9.0 (``-vf fps=F``, default ``round=near``):

* extracted frame ``i`` carries output timestamp ``i/F`` (frame 0 at 0), i.e. source time ``start + i/F``;
  its picture is the last source frame whose time rounds to slot ``i`` (at most half a slot later than ``i/F``);
* the count is ``round(D*F)`` with halves rounded up, D the video's duration: 3.0 s gives 3 frames at F=1 and 6 at
  F=2; 2.5 s gives 3 at F=1 (slots 0, 1, 2) and 5 at F=2; 2.4 s gives 2 at F=1; a clip under ``0.5/F`` gives none.

`stitch` shows frame ``i`` during ``[i/F, (i+1)/F)`` (a `timeline.py` list read through ffmpeg's concat demuxer; with
a transition, each change takes a moment centred on ``(i+1)/F``) and then holds the last frame, or cuts, to the
source's duration, so the output lasts D within one output frame.
"""

from __future__ import annotations

from pathlib import Path

from shd.errors import InputError, MediaError
from shd.media.extract import FRAME_PATTERN, POLL_S, extract, frame_count, frame_timestamp, plan_extract
from shd.media.pictures import FITS, fit_picture, link_or_copy, plan_fit_picture, plan_png, to_png
from shd.media.pictures import _fit as _fit
from shd.media.probe import Probe, parse_probe, plan_probe, probe
from shd.media.runner import GLOBAL_ARGS, find_ffmpeg, last_error_line, run
from shd.media.runner import _compile as _compile
from shd.media.stitch import (
    BLENDED, EncodeOptions, SUBTITLE_LANGUAGE, SUBTITLE_TITLE, TRANSITION_FILTERS, output_size, plan_normalize,
    plan_stitch, stitch,
)

__all__ = [
    "BLENDED", "EncodeOptions", "FITS", "FRAME_PATTERN", "GLOBAL_ARGS", "POLL_S", "Probe", "SUBTITLE_LANGUAGE",
    "SUBTITLE_TITLE", "TRANSITION_FILTERS", "extract", "find_ffmpeg", "fit_picture", "frame_count", "frame_timestamp",
    "last_error_line", "link_or_copy", "output_size", "parse_probe", "plan_extract", "plan_fit_picture",
    "plan_normalize", "plan_png", "plan_probe", "plan_stitch", "plan_verify", "probe", "run", "stitch", "to_png",
    "verify",
]


def plan_verify(ffmpeg: str, video: Path) -> list[str]:
    """Decode every stream of `video` to the end and throw the pictures away (subtitles too: turned into plain
    text), stopping at the first error (``-xerror``); ffmpeg says nothing at ``-v error`` unless something is
    wrong."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", str(video), "-map", "0",
            "-c:s", "text", "-f", "null", "-"]


def verify(ffmpeg: str, video: Path, *, duration: float, tolerance: float, timeout: float) -> None:
    """MediaError(video, why) unless `video` decodes to the end without a complaint, has a video stream, and lasts
    `duration` seconds within `tolerance`. For a file shd made, before it is published."""
    done = run(plan_verify(ffmpeg, video), timeout=timeout, path_for_errors=video)
    if done.returncode != 0 or done.stderr.strip():
        why = last_error_line(done.stderr) or f"ffmpeg exited with {done.returncode}"
        raise MediaError(video, f"the stitched video does not decode ({why})")
    try:
        got = probe(ffmpeg, video, timeout=timeout).duration
    except InputError as e:
        raise MediaError(video, f"the stitched video cannot be read back ({e.reason})") from None
    if abs(got - duration) > tolerance:
        raise MediaError(video, f"the stitched video lasts {got:.2f} s, not {duration:.2f} s")

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

How it is cut: one module per step a job takes, over one runner, each importing only modules listed before it; this
package re-exports every public name (callers write ``media.probe``, ``media.stitch``...).
- runner.py    the one runner (`run`), `find_ffmpeg`, and what every plan uses (`GLOBAL_ARGS`, `_compile`, `_fmt`).
- probe.py     `plan_probe`, `parse_probe` (pure) and `probe`: what a source is, or why it is not a video.
- extract.py   `plan_extract` and `extract`: the frames at a rate, handed over while ffmpeg still runs.
- pictures.py  one picture fitted (`_fit`, which stitching shares) or converted to PNG; `link_or_copy`.
- stitch.py    `plan_stitch`, `plan_normalize` and `stitch`: the painted frames (and FILM's) back into an mp4.
- verify.py    `plan_verify` and `verify`: a stitched video decodes to the end and lasts as long as it should.
inbetweens.py plans FILM's clips with the same helpers, `_compile` and `_fit`, which this package re-exports for it.
"""

from __future__ import annotations

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
from shd.media.verify import plan_verify, verify

__all__ = [
    "BLENDED", "EncodeOptions", "FITS", "FRAME_PATTERN", "GLOBAL_ARGS", "POLL_S", "Probe", "SUBTITLE_LANGUAGE",
    "SUBTITLE_TITLE", "TRANSITION_FILTERS", "extract", "find_ffmpeg", "fit_picture", "frame_count", "frame_timestamp",
    "last_error_line", "link_or_copy", "output_size", "parse_probe", "plan_extract", "plan_fit_picture",
    "plan_normalize", "plan_png", "plan_probe", "plan_stitch", "plan_verify", "probe", "run", "stitch", "to_png",
    "verify",
]

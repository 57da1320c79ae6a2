"""Stitching painted frames back into a video: the encode (the timeline's concat script, a transition's filter,
H.264, the source's audio, the prompts as subtitles), the pictures normalised first when they differ, and the run."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict, Unpack

import ffmpeg as ffmpeg_python

from shd import timeline
from shd.errors import MediaError
from shd.media.extract import FRAME_PATTERN, _frame
from shd.media.pictures import _fit, link_or_copy
from shd.media.runner import _compile, _fmt, run

# The video filter that makes the motion between timed pictures, by `output.transition` (at the output's rate).
TRANSITION_FILTERS: dict[str, tuple[str, dict[str, object]]] = {
    "cut": ("fps", {}),
    "crossfade": ("framerate", {"interp_start": 0, "interp_end": 255, "scene": 100}),  # scene=100: never a "cut"
    "motion": ("minterpolate", {"mi_mode": "mci", "mc_mode": "aobmc", "me_mode": "bidir", "scd": "none"}),
    "film": ("fps", {}),  # the pictures between the paintings are made first (inbetweens.py) and listed with them
}
BLENDED = ("crossfade", "motion")  # the transitions whose filter makes the change, over `transition_seconds`
SUBTITLE_TITLE = "Prompts"
SUBTITLE_LANGUAGE = "eng"


def output_size(src_w: int, src_h: int) -> tuple[int, int]:
    """The stitched video's size for a `src_w` x `src_h` source: each rounded down to even, at least 2 (H.264 4:2:0)."""
    return max(2, src_w - src_w % 2), max(2, src_h - src_h % 2)


class EncodeOptions(TypedDict):
    """What `plan_stitch` takes besides the timeline (see `plan_stitch`)."""

    duration: float
    size: tuple[int, int]
    out: Path
    audio_src: Path | None
    fit: NotRequired[str]                 # "pad" unless given
    out_fps: NotRequired[int]             # 30 unless given
    crf: NotRequired[int]                 # 18 unless given
    transition: NotRequired[str]          # "cut" unless given: a key of TRANSITION_FILTERS
    subtitles: NotRequired[Path | None]   # an .srt file to add as the soft subtitle track "Prompts"


def plan_stitch(ffmpeg: str, script: Path, **opts: Unpack[EncodeOptions]) -> list[str]:
    """Encode the pictures the concat script `script` lists at their times (`timeline.ffconcat`), fitted to `size`
    by `fit`, through `transition`'s filter (`TRANSITION_FILTERS`: the motion from one picture to the next) at
    `out_fps`, as an H.264 yuv420p MP4 cut (-t) to `duration` s. With `audio_src`, its first audio stream is added
    as AAC, cut alike. With `subtitles`, that SRT file becomes a mov_text track titled "Prompts" in English (players
    show it on request; browsers read the .vtt beside the video instead). Format forced to mp4, so `out` may have
    any name; ``+faststart``; overwrites.

    The timing filters rely on the pictures sharing one size and pixel format: ffmpeg rebuilds the filter graph
    when they change, which loses frames. `stitch` normalises mixed pictures first; callers of the plan must too.
    """
    w, h = size = opts["size"]
    if w % 2 or h % 2 or w < 2 or h < 2:
        raise ValueError(f"size must be even and at least 2x2, not {w}x{h} (see output_size)")
    duration = opts["duration"]
    name, args = TRANSITION_FILTERS[opts.get("transition", "cut")]
    video = ffmpeg_python.input(str(script), f="concat", safe=0)
    video = _fit(video, size, opts.get("fit", "pad"))
    video = video.filter(name, fps=opts.get("out_fps", 30), **args).filter("format", "yuv420p")
    streams = [video]
    codecs: dict[str, object] = {}
    if opts["audio_src"] is not None:
        streams.append(ffmpeg_python.input(str(opts["audio_src"]))["a:0"])
        codecs = {"c:a": "aac", "b:a": "192k"}
    subtitles = opts.get("subtitles")
    if subtitles is not None:
        streams.append(ffmpeg_python.input(str(subtitles), f="srt")["s:0"])
        codecs["c:s"] = "mov_text"
    output = ffmpeg_python.output(
        *streams,
        str(opts["out"]),
        f="mp4",
        t=_fmt(duration),
        movflags="+faststart",
        **{"c:v": "libx264", "crf": opts.get("crf", 18), "preset": "medium", **codecs},
    )
    argv = _compile(output, ffmpeg)
    if subtitles is not None:  # ffmpeg-python takes each option once: the track's three tags go in by hand
        argv[-1:-1] = [arg for tag in (f"title={SUBTITLE_TITLE}", f"handler_name={SUBTITLE_TITLE}",
                                       f"language={SUBTITLE_LANGUAGE}") for arg in ("-metadata:s:s:0", tag)]
    return argv


def plan_normalize(ffmpeg: str, frames: Path, out_dir: Path, *, size: tuple[int, int], fit: str = "pad") -> list[str]:
    """Rewrite ``frames/NNNNNN.png`` fitted to `size` as ``out_dir/NNNNNN.png`` (same numbering, one PNG per PNG,
    no timing filters, so the graph rebuilds that mixed sizes cause are harmless)."""
    stream = ffmpeg_python.input(str(Path(frames) / FRAME_PATTERN), f="image2", start_number=0)
    stream = _fit(stream, size, fit).filter("format", "rgb24")
    stream = stream.output(str(Path(out_dir) / FRAME_PATTERN), f="image2", start_number=0, fps_mode="passthrough")
    return _compile(stream, ffmpeg)


def _count_frames(frames: Path, out: Path) -> tuple[int, bool]:
    """How many frames ``frames/NNNNNN.png`` holds, and whether they differ in PNG IHDR (size, bit depth, colour
    type) or are not all PNGs. MediaError(out, ...) if there are none."""
    kinds = set()
    i = 0
    while (path := _frame(frames, i)).exists():
        with open(path, "rb") as f:
            head = f.read(26)
        ok = len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
        kinds.add(struct.unpack(">IIBB", head[16:26]) if ok else None)
        i += 1
    if i == 0:
        raise MediaError(out, f"no frames to stitch ({frames / '000000.png'} is missing)")
    return i, len(kinds) > 1 or None in kinds


def stitch(ffmpeg: str, frames: Path, *, fps: float, timeout: float, transition_seconds: float = 0.5,
           between: Sequence[Sequence[Path]] | None = None, **opts: Unpack[EncodeOptions]) -> None:
    """Stitch ``frames/000000.png``... as frame i shown from i/`fps` s (with `between`, the pictures `between[i]`
    follow frame i evenly across its gap: `timeline.spread`; with a transition of `BLENDED`, each change takes
    `transition_seconds`: `timeline.with_transitions`) by `plan_stitch` (see it for the rest), in a temporary folder
    next to `out` for the concat script and, when the pictures differ in size or pixel format, the pictures fitted
    first. Any failure raises MediaError(out, reason), or DiskFull when ffmpeg ran out of
    space; `timeout` covers each ffmpeg run. ffmpeg is recorded in `out`'s folder while it runs."""
    frames, out = Path(frames).absolute(), Path(opts["out"])
    where: dict[str, Any] = {"timeout": timeout, "path_for_errors": out, "check": True, "folder": out.parent}
    count, mixed = _count_frames(frames, out)
    with tempfile.TemporaryDirectory(prefix=".shd-stitch-", dir=out.parent) as tmp:
        gaps = [list(between[i]) if between is not None and i < len(between) else [] for i in range(count)]
        if any(gaps):  # the frames and the pictures between them, as one sequence in the order it plays
            seq = Path(tmp).absolute() / "seq"
            _link_all([p for i in range(count) for p in (_frame(frames, i), *gaps[i])], seq)
            frames = seq
            count, mixed = _count_frames(frames, out)
        if mixed:
            fitted = Path(tmp).absolute() / "fit"
            fitted.mkdir()
            run(plan_normalize(ffmpeg, frames, fitted, size=opts["size"], fit=opts.get("fit", "pad")), **where)
            frames = fitted
        times = timeline.spread([len(g) for g in gaps], fps)
        shown = [timeline.Shown(_frame(frames, n), t) for n, t in enumerate(times)]
        if opts.get("transition", "cut") in BLENDED:
            shown = timeline.with_transitions(shown, transition_seconds)
        script = Path(tmp) / "timeline.ffconcat"
        script.write_text(timeline.ffconcat(shown, end=opts["duration"], out_fps=opts.get("out_fps", 30)),
                          encoding="utf-8", errors="surrogateescape")
        run(plan_stitch(ffmpeg, script, **opts), **where)


def _link_all(pictures: Sequence[Path], folder: Path) -> None:
    """`pictures` as ``folder/000000.png``, ``000001.png``... in order."""
    folder.mkdir()
    for n, picture in enumerate(pictures):
        link_or_copy(picture, _frame(folder, n))

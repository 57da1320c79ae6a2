"""The pictures between two paintings, through ffmpeg (`output.transition = "film"`): FILM's clips counted and
decoded, and the linear blends that stand in for a pair FILM could not make.

Commands are data, as in shd.media: `plan_*` return argv, `media.run` runs them (children without credentials,
stopped with shd; DiskFull when ffmpeg ran out of space).

FILM's clip of a pair (first-version.md) holds 2^k + 1 frames at 30 fps, its first and last the two paintings; the
pictures between them are frames 1 .. 2^k - 1. For k = 1 the model returns the one midpoint as a PNG instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python

from shd import media
from shd.errors import MediaError

CLIP_FPS = 30  # FILM's own clips' rate; a blend clip made for tests and the in-memory service uses it too


def plan_count_frames(ffmpeg: str, clip: Path) -> list[str]:
    """Decode the first video stream of `clip` to the end, one line of checksum per frame on stdout (`framemd5`:
    lines starting with '#' are its header)."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", str(clip), "-map", "0:v:0",
            "-f", "framemd5", "-"]


def count_frames(ffmpeg: str, clip: Path, *, timeout: float) -> int:
    """How many frames `clip` decodes into; MediaError(clip, why) if it does not decode to the end."""
    done = media.run(plan_count_frames(ffmpeg, clip), timeout=timeout, path_for_errors=clip)
    if done.returncode != 0 or done.stderr.strip():
        raise MediaError(clip, media.last_error_line(done.stderr) or f"ffmpeg exited with {done.returncode}")
    return sum(1 for line in done.stdout.decode("utf-8", "replace").splitlines() if line and line[0] != "#")


def plan_decode(ffmpeg: str, clip: Path, out_dir: Path) -> list[str]:
    """Every frame of `clip` as ``out_dir/000000.png``, ``000001.png``... (as decoded: no frame dropped or
    repeated)."""
    stream = ffmpeg_python.input(str(clip))["v:0"].filter("format", "rgb24")
    return media._compile(stream.output(str(out_dir / media.FRAME_PATTERN), f="image2", start_number=0,
                                        fps_mode="passthrough"), ffmpeg)


def between(ffmpeg: str, clip: Path, out_dir: Path, *, timeout: float) -> list[Path]:
    """The pictures FILM made between a pair's two paintings, in order: a PNG clip is itself the one midpoint;
    an mp4's frames are decoded into `out_dir` (created) without its first and last (the paintings themselves).
    MediaError(clip, ...) if it does not decode, DiskFull if ffmpeg ran out of space."""
    if clip.suffix == ".png":
        return [clip]
    out_dir.mkdir(parents=True, exist_ok=True)
    media.run(plan_decode(ffmpeg, clip, out_dir), timeout=timeout, path_for_errors=clip, check=True,
              folder=out_dir)
    frames = sorted(out_dir.glob("*.png"))
    if len(frames) < 3:
        raise MediaError(clip, f"{len(frames)} frame(s): not a pair's clip (its paintings and the frames between)")
    for end in (frames[0], frames[-1]):
        end.unlink()
    return frames[1:-1]


def _blend(first: Path, second: Path, *, size: tuple[int, int], fit: str, start: int, steps: int) -> Any:
    """`first` turning into `second` (both fitted to `size`): frame n shows (n + `start`)/`steps` of `second`."""
    a, b = (media._fit(ffmpeg_python.input(str(p), loop=1, framerate=CLIP_FPS), size, fit) for p in (first, second))
    # The frame's number from its time: blend's own N, documented to start at 0, starts at 1 in the ffmpeg 9 here.
    return ffmpeg_python.filter([a, b], "blend", all_expr=f"A+(B-A)*(T*{CLIP_FPS}+{start})/{steps}")


def plan_blend(ffmpeg: str, first: Path, second: Path, out_dir: Path, *, count: int, size: tuple[int, int],
               fit: str = "pad") -> list[str]:
    """The `count` pictures evenly between `first` and `second` (a linear blend: picture j of `count` is
    j/(`count` + 1) of the way), fitted to `size`, as ``out_dir/000001.png``..."""
    stream = _blend(first, second, size=size, fit=fit, start=1, steps=count + 1).filter("format", "rgb24")
    return media._compile(stream.output(str(out_dir / media.FRAME_PATTERN), f="image2", start_number=1,
                                        frames=count), ffmpeg)


def blend(ffmpeg: str, first: Path, second: Path, out_dir: Path, *, count: int, size: tuple[int, int], fit: str,
          timeout: float) -> list[Path]:
    """Make `plan_blend`'s pictures in `out_dir` (created) and return them in order. MediaError, or DiskFull."""
    out_dir.mkdir(parents=True, exist_ok=True)
    media.run(plan_blend(ffmpeg, first, second, out_dir, count=count, size=size, fit=fit), timeout=timeout,
              path_for_errors=first, check=True, folder=out_dir)
    return [out_dir / f"{j:06d}.png" for j in range(1, count + 1)]


def plan_blend_clip(ffmpeg: str, first: Path, second: Path, out: Path, *, times: int,
                    size: tuple[int, int]) -> list[str]:
    """A clip shaped like FILM's answer for times_to_interpolate = `times` > 1: 2^times + 1 frames at 30 fps, the
    first `first`, the last `second`, linear blends between (what the in-memory service answers; no motion)."""
    steps = 2 ** times
    stream = _blend(first, second, size=media.output_size(*size), fit="stretch", start=0, steps=steps)
    stream = stream.filter("format", "yuv420p")
    return media._compile(stream.output(str(out), f="mp4", frames=steps + 1, r=CLIP_FPS, vcodec="libx264",
                                        crf=12, preset="ultrafast"), ffmpeg)


def blend_clip(ffmpeg: str, first: Path, second: Path, *, times: int, size: tuple[int, int], work: Path,
               timeout: float = 60) -> bytes:
    """The bytes of `plan_blend_clip`'s clip (a PNG midpoint for `times` = 1), made in a folder of its own under
    `work`."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / ("mid.png" if times == 1 else "clip.mp4")
    try:
        if times == 1:
            media.run(plan_blend(ffmpeg, first, second, work, count=1, size=size, fit="stretch"), timeout=timeout,
                      path_for_errors=first, check=True, folder=work)
            os.replace(work / "000001.png", out)
        else:
            media.run(plan_blend_clip(ffmpeg, first, second, out, times=times, size=size), timeout=timeout,
                      path_for_errors=first, check=True, folder=work)
        return out.read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)

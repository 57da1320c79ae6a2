"""Verifying a stitched video before anyone publishes it: it decodes to the end and lasts as long as it should."""

from __future__ import annotations

from pathlib import Path

from shd.errors import InputError, MediaError
from shd.media.probe import probe
from shd.media.runner import last_error_line, run


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

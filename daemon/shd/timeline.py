"""PURE: what the stitched video shows when: an ordered list of timed pictures, and ffmpeg's concat script for it.

`Shown(path, at)`: from `at` seconds into the output, `path` is on screen. The stitch reads the list through
ffmpeg's concat demuxer (`ffconcat`), and a video filter (media.plan_stitch) makes the motion from one entry to the
next: `cut` holds each picture until the next one; `crossfade` blends and `motion` interpolates between
consecutive entries. With `with_transitions` each picture is listed twice, where its change in ends and where its
change out begins, so the change takes `seconds` centred on the moment the hard cut would be, and in between the
picture holds (two listings of one picture have nothing to blend). A later stage may list clips too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TAIL = 3  # the last picture is listed again this many output frames past the end: minterpolate looks ahead


@dataclass(frozen=True)
class Shown:
    """From `at` seconds on (into the output), `path` is on screen."""

    path: Path
    at: float


def held(pictures: Sequence[Path], fps: float) -> list[Shown]:
    """Picture i on screen from i/`fps` s: the first version's one picture per second (at fps = 1)."""
    return [Shown(p, i / fps) for i, p in enumerate(pictures)]


def with_transitions(shown: Sequence[Shown], seconds: float) -> list[Shown]:
    """`shown` with every change taking `seconds` (at most the shortest time a picture is on screen), centred on
    the moment of the change: each picture is listed where its change in ends and again where its change out
    begins. The first starts at its own time."""
    if len(shown) < 2:
        return list(shown)
    gaps = [b.at - a.at for a, b in zip(shown, shown[1:])]
    half = min(seconds, *gaps) / 2
    out: list[Shown] = []
    for i, s in enumerate(shown):
        start = s.at if i == 0 else s.at + half
        out.append(Shown(s.path, start))
        if i + 1 < len(shown) and shown[i + 1].at - half > start:
            out.append(Shown(s.path, shown[i + 1].at - half))
    return out


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _quoted(path: Path) -> str:
    text = str(path)
    if "\n" in text or "\r" in text:
        raise ValueError(f"a concat script cannot name {text!r} (a line break in a path)")
    return "'" + text.replace("'", "'\\''") + "'"


def ffconcat(shown: Sequence[Shown], *, end: float, out_fps: int) -> str:
    """The concat script (`ffconcat version 1.0`) that plays `shown`, the last picture held past `end` seconds
    (listed again `TAIL` output frames after it, so that a filter that looks ahead reaches the end; the stitch cuts
    at `end`). Times are whole microseconds, each entry's duration the difference of two of them (no drift)."""
    if not shown:
        raise ValueError("nothing to show")
    times = [_us(s.at) for s in shown]
    if any(b <= a for a, b in zip(times, times[1:])) or times[0] < 0:
        raise ValueError("pictures must be listed at increasing times from 0")
    frame = _us(1 / out_fps)
    tail_from = max(_us(end), times[-1] + frame)
    entries = [(s.path, t) for s, t in zip(shown, times)]
    entries += [(shown[-1].path, tail_from + k * frame) for k in range(TAIL)]
    lines = ["ffconcat version 1.0"]
    for i, (path, t) in enumerate(entries):
        duration = entries[i + 1][1] - t if i + 1 < len(entries) else frame
        lines += [f"file {_quoted(path)}", f"duration {duration / 1_000_000:.6f}"]
    return "\n".join(lines) + "\n"

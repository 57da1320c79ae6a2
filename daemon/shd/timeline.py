"""PURE: what the stitched video shows when: an ordered list of timed pictures, and ffmpeg's concat script for it.

`Shown(path, at)`: from `at` seconds into the output, `path` is on screen. The stitch reads the list through
ffmpeg's concat demuxer (`ffconcat`), and a video filter (media.plan_stitch) makes the motion from one entry to the
next: `cut` holds each picture until the next one; `crossfade` blends and `motion` interpolates between
consecutive entries. With `with_transitions` each picture is listed twice, where its change in ends and where its
change out begins, so the change takes `seconds` centred on the moment the hard cut would be, and in between the
picture holds (two listings of one picture have nothing to blend). With FILM (`spread`), the pictures FILM made
between two paintings are listed in the gap between them, evenly, and the `cut` filter plays them.
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


def spread(between: Sequence[int], fps: float) -> list[float]:
    """The times (seconds) of a sequence of paintings with pictures between them: painting i at i/`fps`, then the
    `between[i]` pictures made between it and painting i + 1 evenly across that gap (the j-th of m at
    (i + j/(m + 1))/`fps`; FILM's 2^k - 1 in-betweens are 1/2^k of a gap apart), so every painting is on screen
    at its own time in the source, as with a cut. `between` has one count per painting (the last one's is 0)."""
    times = []
    for i, m in enumerate(between):
        times += [(i + j / (m + 1)) / fps for j in range(m + 1)]
    return times


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


US = 1_000_000  # microseconds a second: the timeline's unit


def _us(seconds: float) -> int:
    return round(seconds * US)


def _quoted(path: Path) -> str:
    text = str(path)
    if "\n" in text or "\r" in text:
        raise ValueError(f"a concat script cannot name {text!r} (a line break in a path)")
    return "'" + text.replace("'", "'\\''") + "'"


def ffconcat(shown: Sequence[Shown], *, end: float, out_fps: int) -> str:
    """The concat script (`ffconcat version 1.0`) that plays `shown`, the last picture held past `end` seconds
    (listed again `TAIL` output frames after it, so that a filter that looks ahead reaches the end; the stitch cuts
    at `end`). Times are whole microseconds, each entry's duration the difference of two of them (no drift), and
    each picture is read at a frame rate of a million a second (`option framerate`): the concat demuxer keeps its
    first file's time base, the image reader's 1/25 s unless told, and would move a picture to the nearest 1/25 s."""
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
        lines += [f"file {_quoted(path)}", f"option framerate {US}", f"duration {duration / 1_000_000:.6f}"]
    return "\n".join(lines) + "\n"

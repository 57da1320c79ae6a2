"""Probing a source with ffmpeg alone (no ffprobe): the command, its stderr parsed into a `Probe` (pure), and the
checks that turn a missing, empty, unreadable or non-video file into one InputError naming it."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from shd import shape
from shd.errors import InputError
from shd.media.runner import last_error_line, run


@dataclass(frozen=True)
class Probe:
    """What shd needs to know about a source video.

    duration: seconds (container duration, to 1/100 s as ffmpeg prints it), > 0.
    fps: the video stream's frame rate, None when ffmpeg does not state one.
    width, height: the picture as displayed, in square pixels: after a 90/270 degree rotation tag and with the
    sample aspect ratio applied (shape.display_size; extracted frames have this size).
    has_audio: the file has at least one audio stream. video_codec: e.g. "h264". start_time: the container's start.
    sar: the stored pixels' sample aspect ratio (as displayed, i.e. after a rotation), (1, 1) when square or unknown.
    """

    duration: float
    fps: float | None
    width: int
    height: int
    has_audio: bool
    video_codec: str
    start_time: float
    sar: tuple[int, int] = (1, 1)


def plan_probe(ffmpeg: str, src: Path) -> list[str]:
    """``ffmpeg -hide_banner -nostdin -i SRC``: ffmpeg prints the input's description to stderr and exits 1."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-i", str(src)]


_DURATION = re.compile(r"Duration:\s*(N/A|(\d+):(\d+):(\d+(?:\.\d+)?))")
_START = re.compile(r"start:\s*(-?\d+(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$")
_SIZE = re.compile(r"(?<![\w.])([1-9]\d{0,5})x([1-9]\d{0,5})(?![\w.])")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_SAR = re.compile(r"\bSAR (\d+):(\d+)")
_ROTATION = re.compile(r"display ?matrix:\s*rotation of\s*(-?\d+(?:\.\d+)?)\s*degrees", re.IGNORECASE)


def _reject_reason(stderr: str) -> str | None:
    """Why ffmpeg could not open the input at all, or None if it did."""
    low = stderr.lower()
    if "input #0" in low:
        return None
    if "no such file or directory" in low:
        return "does not exist"
    if "permission denied" in low:
        return "is not readable (permission denied)"
    if "is a directory" in low:
        return "is a directory, not a video file"
    if "misdetection possible" in low or ("invalid data found" in low and "moov atom not found" not in low):
        return "is not a video file (ffmpeg: invalid data found when processing input)"
    if "moov atom not found" in low:
        return "is a truncated or unfinished MP4 (moov atom not found)"
    return f"cannot be read as a video ({last_error_line(stderr) or 'ffmpeg gave no reason'})"


def parse_probe(src: Path, stderr: str) -> Probe:
    """Parse the stderr of `plan_probe`'s command into a `Probe` (pure).

    Raises InputError(src, reason) when ffmpeg could not open it (missing, invalid data, "moov atom not found"), when
    it has no video stream (audio only; cover art does not count), or no duration > 0 (a still image).
    """
    reason = _reject_reason(stderr)
    if reason:
        raise InputError(src, reason)
    blocks: list[tuple[str, str, list[str]]] = []  # (kind, description, following lines)
    for line in stderr.splitlines():
        m = _STREAM.match(line)
        if m:
            blocks.append((m.group(1), m.group(2), []))
        elif blocks and line.startswith("    "):
            blocks[-1][2].append(line)
        elif blocks:
            blocks.append(("", "", []))  # a non-stream line ends the block
    videos = [(d, rest) for kind, d, rest in blocks if kind == "Video" and "(attached pic)" not in d]
    has_audio = any(kind == "Audio" for kind, _, _ in blocks)
    if not videos:
        raise InputError(src, "has no video stream" + (" (audio only)" if has_audio else ""))
    desc, rest = videos[0]
    m = _DURATION.search(stderr)
    duration = 0.0 if not m or m.group(1) == "N/A" else int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4])
    if duration <= 0:
        what = "unknown" if not m or m.group(1) == "N/A" else "zero"
        raise InputError(src, f"is not a video: its duration is {what} (a still image?)")
    size = _SIZE.search(desc)
    if not size:
        raise InputError(src, "video stream has no picture size")
    width, height = int(size[1]), int(size[2])
    sar_match = _SAR.search(desc)
    sar = (int(sar_match[1]), int(sar_match[2])) if sar_match and int(sar_match[1]) and int(sar_match[2]) else (1, 1)
    rot = next((_ROTATION.search(ln) for ln in rest if _ROTATION.search(ln)), None)
    if rot and round(abs(float(rot[1]))) % 180 == 90:
        width, height, sar = height, width, (sar[1], sar[0])
    if sar[0] == sar[1]:
        sar = (1, 1)
    width, height = shape.display_size(width, height, sar)
    rates = {kind: float(num) * (1000 if k else 1) for num, k, kind in _RATE.findall(desc)}
    fps = rates.get("fps") or rates.get("tbr") or None
    start = _START.search(stderr)
    return Probe(
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        has_audio=has_audio,
        video_codec=desc.split()[0].rstrip(","),
        start_time=float(start[1]) if start else 0.0,
        sar=sar,
    )


def _check_source(src: Path) -> None:
    """InputError unless `src` is a non-empty, readable regular file (a FIFO would hang ffmpeg)."""
    try:
        st = os.stat(src)
    except FileNotFoundError:
        raise InputError(src, "does not exist") from None
    except OSError as e:
        raise InputError(src, f"cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(src, "is a directory, not a video file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(src, "is not a regular file")
    if st.st_size == 0:
        raise InputError(src, "is empty (0 bytes)")
    try:
        with open(src, "rb") as f:
            f.read(1)
    except OSError as e:
        raise InputError(src, f"is not readable ({e.strerror})") from None


def probe(ffmpeg: str, src: Path, timeout: float = 60) -> Probe:
    """Describe `src` with ffmpeg alone. InputError for a missing, empty, unreadable or non-regular path and for
    everything `parse_probe` rejects; MediaError if ffmpeg hangs past `timeout` seconds."""
    _check_source(src)
    done = run(plan_probe(ffmpeg, src), timeout=timeout, path_for_errors=src)
    return parse_probe(src, done.stderr)

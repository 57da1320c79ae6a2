"""Which files the web page may serve, byte ranges, and thumbnails.

Only files the store names (a frame's source and painted picture, a job's output and its `.vtt`) are ever
served, and only when their real path (every symlink resolved) lies inside the job's own folder
(`state_dir/jobs/<id>`) or the outbox. A symlink in a job folder that points elsewhere is refused like a
missing file.

Thumbnails are made once, by ffmpeg, as small JPEGs in `state_dir/jobs/<id>/thumbs/` (remade only when the
picture is newer), never by re-encoding full frames per request.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from shd import media

THUMB_WIDTH = 320
_thumb_slots = threading.BoundedSemaphore(2)  # at most two ffmpeg thumbnailers at once, however many requests


def contained(path: str | Path | None, roots: list[Path]) -> Path | None:
    """The real path of `path` if it is an existing regular file inside one of `roots` (themselves resolved),
    else None."""
    if not path:
        return None
    real = Path(os.path.realpath(path))
    for root in roots:
        r = Path(os.path.realpath(root))
        if real != r and real.is_relative_to(r):
            return real if real.is_file() else None
    return None


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """The byte range a `Range` header asks for, as (first, last) inclusive; None for the whole file (no header,
    or one we do not serve partially, e.g. several ranges); False if it cannot be satisfied (416)."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # the last N bytes
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n and size else False
    first = int(m.group(1))
    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    return (first, last) if first <= last and first < size else False


def plan_thumbnail(ffmpeg: str, src: Path, dest: Path, width: int = THUMB_WIDTH) -> list[str]:
    """argv: one JPEG at most `width` pixels wide (height to scale, even), from an image file."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
            "-vf", f"scale='min({width},iw)':-2", "-frames:v", "1", "-q:v", "5", "-f", "mjpeg", str(dest)]


def thumbnail(ffmpeg: str, src: Path, job_dir: Path, name: str) -> Path | None:
    """The thumbnail of `src` (already checked to be inside `job_dir`) as `job_dir/thumbs/<name>.jpg`, made now if
    it is missing or older than `src`. None if the thumbs folder is not a real folder inside `job_dir` (a symlink
    out of it, say): nothing is ever written outside the job folder. The caller checks the result with
    `contained()` like any other file. Raises MediaError if ffmpeg cannot make it."""
    folder = job_dir / "thumbs"
    folder.mkdir(exist_ok=True)
    if folder.is_symlink() or Path(os.path.realpath(folder)).parent != Path(os.path.realpath(job_dir)):
        return None
    dest = folder / f"{name}.jpg"
    if _fresh(dest, src):
        return dest
    with _thumb_slots:
        if not _fresh(dest, src):  # another request may have made it while this one waited
            tmp = folder / f".{name}.{threading.get_ident()}.part"
            try:
                media.run(plan_thumbnail(ffmpeg, src, tmp), timeout=60, path_for_errors=src, check=True)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
    return dest


def _fresh(thumb: Path, src: Path) -> bool:
    try:
        return thumb.stat().st_mtime_ns >= src.stat().st_mtime_ns
    except OSError:
        return False

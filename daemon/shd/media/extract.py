"""Extracting a source's frames at a rate: the command, the frames' times and count (see the package docstring),
and the run that hands each frame over as soon as it is complete, while ffmpeg still runs."""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ffmpeg as ffmpeg_python

from shd import children, diskfull
from shd.errors import DiskFull, InputError, MediaError
from shd.media.probe import _check_source, probe
from shd.media.runner import _compile, _fmt, _not_started, last_error_line

FRAME_PATTERN = "%06d.png"
POLL_S = 0.02
_FRAME_NAME = re.compile(r"^\d{6}\.png(\.tmp)?$")


def frame_timestamp(index: int, fps: float, start: float = 0.0) -> float:
    """Source time (seconds) of extracted frame `index` (0-based): ``start + index/fps`` (see the package docstring:
    the picture is the source frame nearest before the middle of that slot, at most ``0.5/fps`` later)."""
    return start + index / fps


def frame_count(duration: float, fps: float) -> int:
    """How many frames `plan_extract` gives a source of `duration` seconds: ``round(duration*fps)``, halves up (see
    the package docstring). From a probe this is what the header promises; only extraction says what is there."""
    return math.floor(duration * fps + 0.5)


def plan_extract(ffmpeg: str, src: Path, out_dir: Path, fps: float, size: tuple[int, int] | None = None) -> list[str]:
    """Extract the first video stream at `fps` into ``out_dir/000000.png``, ``000001.png``, ... (0-based), scaled to
    `size` in square pixels when given (a source whose pixels are not square: `Probe` width and height).

    Each PNG is written under a temporary name and renamed (``-atomic_writing 1``), so a frame that exists is complete.
    """
    scale = f",scale={size[0]}:{size[1]},setsar=1" if size else ""
    stream = ffmpeg_python.input(str(src))["V:0"].output(
        str(Path(out_dir) / FRAME_PATTERN),
        vf=f"fps={_fmt(fps)}{scale}",
        f="image2",
        start_number=0,
        atomic_writing=1,
    )
    return _compile(stream, ffmpeg)


def _frame(out_dir: Path, index: int) -> Path:
    return out_dir / f"{index:06d}.png"


def extract(
    ffmpeg: str,
    src: Path,
    out_dir: Path,
    fps: float,
    on_frame: Callable[[int, Path], None],
    *,
    timeout: float,
    should_stop: Callable[[], bool] = lambda: False,
    size: tuple[int, int] | None = None,
) -> int:
    """Extract `src` at `fps` (scaled to `size`, see `plan_extract`) into `out_dir` (created; stale ``NNNNNN.png``
    there are removed first), calling ``on_frame(index, path)`` in order for each frame as soon as it is complete,
    while ffmpeg still runs. Returns the frame count.

    InputError(src, ...) for a bad source (as `probe`, plus ffmpeg's last error line on a non-zero exit, a file that
    ends early, or zero frames); DiskFull(out_dir, ...) when ffmpeg ran out of space (checked first: a full disk is
    never the input's fault). MediaError(src, ...) after `timeout` seconds or when `should_stop()` turns true
    ("interrupted"); ffmpeg is then killed and reaped. An exception from `on_frame` kills ffmpeg and propagates.
    ffmpeg is recorded in `out_dir` while it runs (`shd.children`).
    """
    _check_source(src)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.iterdir():
        if _FRAME_NAME.match(stale.name):
            stale.unlink()
    argv = plan_extract(ffmpeg, src, out_dir, fps, size)
    deadline = time.monotonic() + timeout
    count = 0
    with tempfile.TemporaryFile() as errf:
        try:
            with children.running(argv, folder=out_dir, stdout=subprocess.DEVNULL, stderr=errf) as proc:
                while True:
                    rc = proc.poll()
                    while _frame(out_dir, count).exists():
                        on_frame(count, _frame(out_dir, count))
                        count += 1
                    if rc is not None:
                        break
                    if should_stop():
                        raise MediaError(src, "interrupted")
                    if time.monotonic() > deadline:
                        raise MediaError(src, f"ffmpeg timed out after {_fmt(timeout)} s extracting frames")
                    time.sleep(POLL_S)
        except OSError as e:
            raise _not_started(e, ffmpeg, src) from None
        errf.seek(0)
        stderr = errf.read().decode("utf-8", errors="replace")
    if rc != 0:
        if diskfull.ffmpeg_ran_out(rc, out_dir):
            raise DiskFull(out_dir, last_error_line(stderr))
        probe(ffmpeg, src)  # its InputError says best what is wrong with the file (extract logs errors only)
        raise InputError(src, f"cannot be decoded ({last_error_line(stderr) or f'ffmpeg exited with {rc}'})")
    if ": partial file" in stderr:
        raise InputError(src, f"is truncated: the file ends early (only {count} frame(s) could be read)")
    if count == 0:
        raise InputError(src, f"no frames could be extracted at fps={_fmt(fps)} (too short or undecodable)")
    return count

"""The one runner of shd's ffmpeg commands (`run`: children without credentials, a timeout, the last error line,
a full disk told from a bad input), which ffmpeg to run, and the helpers every plan uses: shd's global options and
ffmpeg-python's argv (`_compile`), numbers as ffmpeg reads them (`_fmt`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python

from shd import children, diskfull
from shd.errors import DiskFull, MediaError, ShdError

GLOBAL_ARGS = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]


def find_ffmpeg(configured: str | None = None) -> str:
    """Return the ffmpeg to run: `configured` (which must be an executable file, else MediaError naming it),
    else ``ffmpeg`` on PATH, else the binary shipped by imageio-ffmpeg."""
    if configured:
        path = os.path.expanduser(configured)
        if not os.path.isfile(path):
            raise MediaError(configured, "configured ffmpeg does not exist")
        if not os.access(path, os.X_OK):
            raise MediaError(configured, "configured ffmpeg is not executable")
        return path
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def _compile(stream: Any, ffmpeg: str) -> list[str]:
    """The argv that ffmpeg-python builds for `stream`, run by `ffmpeg` with shd's global options."""
    argv: list[str] = ffmpeg_python.compile(stream, cmd=[ffmpeg, *GLOBAL_ARGS])
    return argv


def _fmt(x: float) -> str:
    """A number as ffmpeg should read it: 1.0 -> "1", 2.5 -> "2.5" (full precision, no exponent)."""
    x = float(x)
    if x == int(x):
        return str(int(x))
    return format(x, ".9f").rstrip("0").rstrip(".")


def run(argv: list[str], *, timeout: float, path_for_errors: Path, check: bool = False,
        folder: Path | None = None) -> subprocess.CompletedProcess[Any]:
    """Run one command (see `shd.children`) and return it with ``stdout`` as bytes and ``stderr`` as text.

    Past `timeout` seconds the process is killed and MediaError(path_for_errors, ...) raised; a binary that cannot be
    started raises MediaError too. With `check`, a non-zero exit raises DiskFull when the command ran out of space
    writing into `folder` (also where it is recorded while it runs), else MediaError(path_for_errors, last error
    line).
    """
    try:
        with children.running(argv, folder=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            try:
                out, err_bytes = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise MediaError(path_for_errors, f"ffmpeg timed out after {_fmt(timeout)} s") from None
    except OSError as e:
        raise _not_started(e, argv[0], path_for_errors) from None
    err = err_bytes.decode("utf-8", errors="replace")
    if check and proc.returncode != 0:
        reason = last_error_line(err) or f"ffmpeg exited with {proc.returncode}"
        if folder is not None and diskfull.ffmpeg_ran_out(proc.returncode, folder):
            raise DiskFull(folder, reason)
        raise MediaError(path_for_errors, reason)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _not_started(e: OSError, binary: str, path_for_errors: Path) -> ShdError:
    """Why a command could not be started (or recorded, see shd.children): DiskFull, or MediaError."""
    if diskfull.is_full(e):
        return DiskFull(Path(e.filename) if e.filename else path_for_errors, "cannot record ffmpeg's pid")
    return MediaError(path_for_errors, f"cannot run {binary}: {e.strerror or e}")


_NOISE = ("conversion failed", "at least one output file must be specified", "error opening input file",
          "error opening output file", "exiting normally", "nothing was written")


def last_error_line(stderr: str) -> str:
    """The last stderr line that says what went wrong, without ffmpeg's ``[ctx @ 0x..]`` prefixes and generic
    trailers ("Conversion failed!", "Error opening input files: ...")."""
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln]
    meaningful = [ln for ln in lines if not ln.lower().startswith(_NOISE)]
    line = (meaningful or lines or [""])[-1]
    return re.sub(r"^Error opening input:\s*", "", line)

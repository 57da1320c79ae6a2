"""Test helpers that make and inspect small media files with the real ffmpeg (no ffprobe needed).

They deliberately do not import shd, so a broken shd.media cannot break the fixtures that test it.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from functools import lru_cache
from pathlib import Path

_QUIET = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg the tests use: ``ffmpeg`` on PATH, else the one imageio-ffmpeg ships (shd's own fallback order)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(*args: str, stdout: bool = False) -> bytes:
    done = subprocess.run(
        [ffmpeg_exe(), *_QUIET, *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout if stdout else b""


def make_video(
    path: Path,
    *,
    seconds: float = 3.0,
    size: tuple[int, int] = (160, 120),
    rate: int = 10,
    audio: bool = True,
    sar: tuple[int, int] | None = None,
) -> Path:
    """Write a testsrc2 pattern video (H.264 yuv420p MP4, moov at the end) of `seconds`, plus a 440 Hz AAC sine
    of the same length when `audio`; with `sar`, its pixels are that shape (shown `size` x `sar` wide). Returns
    `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    args = ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    if sar:
        args += ["-vf", f"setsar=sar={sar[0]}/{sar[1]}:max=1000"]
    args += ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac"]
    _ffmpeg(*args, "-f", "mp4", str(path))
    return path


def make_still_video(path: Path, *, seconds: float = 3.0, colour: str = "black",
                     size: tuple[int, int] = (64, 48)) -> Path:
    """Write a video of one solid colour (every frame identical, as black frames and title cards are), no audio."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    _ffmpeg("-f", "lavfi", "-i", f"color=c={colour}:size={w}x{h}:rate=10", "-t", str(seconds), "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4", str(path))
    return path


def make_ten_hour_still(path: Path) -> Path:
    """A file of about 1.4 KB whose one frame lasts ten hours: its header claims 10:00:00, and extracting it at
    fps=1 really decodes 36,000 frames (the fps filter repeats the picture)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", "color=c=black:size=16x16:rate=1/36000", "-frames:v", "1", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4", str(path))
    return path


def understate_duration(src: Path, dst: Path, factor: int = 5) -> Path:
    """Copy an MP4 (as `make_video` writes it) with the durations in its header (mvhd, tkhd, mdhd) divided by
    `factor`: ffmpeg then reports 1/factor of the length, but decodes every frame."""
    data = bytearray(Path(src).read_bytes())

    def patch(start: int, end: int) -> None:
        i = start
        while i < end:
            size, kind = struct.unpack(">I4s", data[i:i + 8])
            if kind in (b"moov", b"trak", b"mdia"):
                patch(i + 8, i + size)
            elif kind in (b"mvhd", b"mdhd"):  # version 0: flags, creation, modification, timescale, duration
                at = i + 8 + 4 + 4 + 4 + 4
                struct.pack_into(">I", data, at, struct.unpack(">I", data[at:at + 4])[0] // factor)
            elif kind == b"tkhd":  # version 0: flags, creation, modification, track id, reserved, duration
                at = i + 8 + 4 + 4 + 4 + 4 + 4
                struct.pack_into(">I", data, at, struct.unpack(">I", data[at:at + 4])[0] // factor)
            i += size

    patch(0, len(data))
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def make_audio_only(path: Path, seconds: float = 2.0) -> Path:
    """Write an MP4 (m4a) holding only an AAC sine: a real media file with no video stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds), "-c:a", "aac", "-f", "mp4", str(path))
    return path


def make_truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first `fraction` of `src`'s bytes to `dst`. For an MP4 written without faststart (as `make_video`
    writes them) the moov atom is at the end, so the result is an unplayable, interrupted-copy-like file."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def make_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int]) -> Path:
    """Write a solid-colour 8-bit RGB PNG of `size` (pure Python, exact colours)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    w, h = size
    row = b"\x00" + bytes(rgb) * w
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * h))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def _describe(path: Path) -> str:
    """ffmpeg's stderr description of `path` (``ffmpeg -i`` with no output exits 1 by design)."""
    done = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    err = done.stderr.decode(errors="replace")
    if "Input #0" not in err:
        raise RuntimeError(f"ffmpeg cannot read {path}: {err.strip()}")
    return err


def probe_duration(path: Path) -> float:
    """The container duration ffmpeg reports (to 1/100 s)."""
    m = re.search(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)", _describe(path))
    if not m:
        raise RuntimeError(f"{path}: no duration")
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def has_audio(path: Path) -> bool:
    """Whether `path` has an audio stream."""
    return re.search(r"Stream #\d+:\d+\S*: Audio:", _describe(path)) is not None


def video_size(path: Path) -> tuple[int, int]:
    """(width, height) of the first video stream."""
    for line in _describe(path).splitlines():
        if re.search(r"Stream #\d+:\d+\S*: Video:", line):
            m = re.search(r"(?<![\w.])([1-9]\d*)x([1-9]\d*)(?![\w.])", line)
            if m:
                return int(m[1]), int(m[2])
    raise RuntimeError(f"{path}: no video stream")


def frame_rgb(path: Path, t: float, xy: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """Decode the frame on screen at time `t` of `path` (the last one starting at or before `t`) and return the RGB
    pixel at `xy` (default: the centre)."""
    w, h = video_size(path)
    start = max(0.0, t - 1.0)  # input seek lands here; select then keeps frames up to t, the last one is shown at t
    data = _ffmpeg(
        "-ss", f"{start:.6f}", "-i", str(path), "-map", "0:v:0",
        "-vf", f"select='lte(t\\,{t - start + 1e-6:.6f})'", "-fps_mode", "passthrough",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        stdout=True,
    )
    size = w * h * 3
    if len(data) < size:
        raise RuntimeError(f"{path}: no frame at t={t}")
    x, y = xy if xy is not None else (w // 2, h // 2)
    i = len(data) - size + (y * w + x) * 3
    return data[i], data[i + 1], data[i + 2]


def stream_descriptions(path: Path, kind: str) -> list[str]:
    """Each `kind` ("Video", "Audio", "Subtitle") stream's description line with its indented metadata lines."""
    found: list[str] = []
    for line in _describe(path).splitlines():
        if re.search(r"^\s*Stream #\d+:\d+\S*: ", line):
            found.append(line if f": {kind}:" in line else "")
        elif found and line.startswith("    ") and found[-1]:
            found[-1] += "\n" + line
    return [d for d in found if d]


MOV_TEXT_BOXES = {b"styl", b"hlit", b"hclr", b"krok", b"dlay", b"href", b"tbox", b"blnk", b"twrp"}


def subtitle_texts(path: Path) -> list[str]:
    """The non-empty texts of the first subtitle track of an mp4, in order. Its mov_text samples come back one after
    the other: a 2-byte length, the UTF-8 text, then optional boxes (4-byte size, 4-letter type, e.g. "styl")."""
    data = _ffmpeg("-i", str(path), "-map", "0:s:0", "-c", "copy", "-f", "data", "pipe:1", stdout=True)
    texts, pos = [], 0
    while pos + 2 <= len(data):
        n = struct.unpack(">H", data[pos:pos + 2])[0]
        pos += 2
        if n:
            texts.append(data[pos:pos + n].decode())
        pos += n
        while pos + 8 <= len(data) and data[pos + 4:pos + 8] in MOV_TEXT_BOXES:
            pos += struct.unpack(">I", data[pos:pos + 4])[0]
    return texts

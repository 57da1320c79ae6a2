"""shd.media against the real ffmpeg: probing, streaming extraction, bad inputs, stitching."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from shd import media, png, sheet, sidecars
from shd.errors import DiskFull, InputError, MediaError
from tests.videos import (
    ffmpeg_exe,
    frame_rgb,
    has_audio,
    make_audio_only,
    make_png,
    make_truncated,
    make_video,
    probe_duration,
    stream_descriptions,
    subtitle_texts,
    video_size,
)

FF = ffmpeg_exe()
ONE_OUTPUT_FRAME = 1 / 30
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255)]


@pytest.fixture(scope="module")
def vids(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vids")
    v = {
        "3s": make_video(d / "3s.mp4", seconds=3.0),
        "2.5s": make_video(d / "2.5s.mp4", seconds=2.5),
        "3s_silent": make_video(d / "3s_silent.mp4", seconds=3.0, audio=False),
        "2.5s_silent": make_video(d / "2.5s_silent.mp4", seconds=2.5, audio=False),
        "short": make_video(d / "short.mp4", seconds=0.3, audio=False),
        "audio_only": make_audio_only(d / "audio_only.mp4"),
    }
    v["truncated"] = make_truncated(v["3s"], d / "truncated.mp4")
    faststart = d / "faststart.mp4"
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(v["3s_silent"]), "-c", "copy",
                    "-movflags", "+faststart", str(faststart)], check=True)
    v["truncated_faststart"] = make_truncated(faststart, d / "truncated_faststart.mp4")
    v["empty"] = d / "empty.mp4"
    v["empty"].write_bytes(b"")
    v["text"] = d / "notes.mp4"
    v["text"].write_text("this is not a video\n")
    v["png"] = d / "still.mp4"
    v["png"].write_bytes(make_png(d / "still.png", (10, 20, 30), (64, 48)).read_bytes())
    v["dir"] = d / "folder.mp4"
    v["dir"].mkdir()
    v["missing"] = d / "missing.mp4"
    return v


def _slow_ffmpeg(tmp_path: Path, readrate: float = 2.0) -> tuple[str, Path]:
    """An ffmpeg that reads its input at `readrate` x real time and records its pid (it execs: the pid is ffmpeg's)."""
    pidfile = tmp_path / "ffmpeg.pid"
    script = tmp_path / "slow-ffmpeg"
    script.write_text(f'#!/bin/sh\necho $$ > "{pidfile}"\nexec "{FF}" -readrate {readrate} "$@"\n')
    script.chmod(0o755)
    return str(script), pidfile


def _assert_reaped(pidfile: Path) -> None:
    pid = int(pidfile.read_text())
    with pytest.raises(ChildProcessError):  # neither running nor a zombie: already waited for
        os.waitpid(pid, os.WNOHANG)


def _is_complete_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")


# ---------------------------------------------------------------------------------------------------- probe


def test_probe_video_with_audio(vids):
    p = media.probe(FF, vids["3s"])
    assert p.duration == pytest.approx(3.0, abs=0.01)
    assert (p.width, p.height, p.has_audio, p.video_codec) == (160, 120, True, "h264")
    assert p.fps == 10.0 and p.start_time == 0.0


def test_probe_video_without_audio(vids):
    p = media.probe(FF, vids["2.5s_silent"])
    assert p.duration == pytest.approx(2.5, abs=0.01) and not p.has_audio


BAD = {
    "missing": "does not exist",
    "empty": "is empty (0 bytes)",
    "text": "not a video file",
    "truncated": "moov atom not found",
    "audio_only": "no video stream",
    "png": "duration is unknown",
    "dir": "directory",
}


@pytest.mark.parametrize("name", BAD)
def test_probe_rejects_bad_input_naming_the_file(vids, name):
    with pytest.raises(InputError) as e:
        media.probe(FF, vids[name])
    assert e.value.path == str(vids[name])
    assert BAD[name] in e.value.reason
    assert vids[name].name in str(e.value)


def test_probe_rejects_unreadable_file(vids, tmp_path):
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(vids["3s"].read_bytes())
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user that can read any file")
        with pytest.raises(InputError, match="not readable"):
            media.probe(FF, locked)
    finally:
        locked.chmod(0o644)


# ---------------------------------------------------------------------------------------------------- extract


@pytest.mark.parametrize("name, fps, count", [("3s", 1, 3), ("3s", 2, 6), ("2.5s", 1, 3), ("2.5s", 2, 5)])
def test_extract_calls_on_frame_in_order_with_complete_frames(vids, tmp_path, name, fps, count):
    seen: list[tuple[int, Path, bool]] = []
    n = media.extract(FF, vids[name], tmp_path / "frames", fps,
                      lambda i, p: seen.append((i, p, _is_complete_png(p))), timeout=30)
    assert n == count
    assert [i for i, _, _ in seen] == list(range(count))
    assert [p for _, p, _ in seen] == [tmp_path / "frames" / f"{i:06d}.png" for i in range(count)]
    assert all(ok for _, _, ok in seen)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"{i:06d}.png" for i in range(count)]


def test_extract_streams_frames_while_ffmpeg_runs(vids, tmp_path):
    slow, pidfile = _slow_ffmpeg(tmp_path, readrate=3)
    out = tmp_path / "frames"
    calls: list[tuple[int, float, int]] = []  # (index, when, frames on disk then)
    n = media.extract(slow, vids["3s"], out, 2,
                      lambda i, p: calls.append((i, time.monotonic(), len(list(out.glob("*.png"))))), timeout=30)
    done = time.monotonic()
    assert n == 6 and [c[0] for c in calls] == list(range(6))
    assert calls[0][2] < 6, "frame 0 was reported only after every frame had been written"
    assert done - calls[0][1] > 0.3, "frame 0 was reported only when ffmpeg finished"
    _assert_reaped(pidfile)


def test_extract_removes_stale_frames_first(vids, tmp_path):
    out = tmp_path / "frames"
    for i in range(10):
        make_png(out / f"{i:06d}.png", (1, 2, 3), (8, 8))
    (out / "keep.txt").write_text("not a frame")
    assert media.extract(FF, vids["3s"], out, 1, lambda i, p: None, timeout=30) == 3
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png", "keep.txt"]


def test_extract_should_stop_kills_ffmpeg_promptly(vids, tmp_path):
    slow, pidfile = _slow_ffmpeg(tmp_path, readrate=0.5)
    started = time.monotonic()
    with pytest.raises(MediaError, match="interrupted") as e:
        media.extract(slow, vids["3s"], tmp_path / "f", 1, lambda i, p: None, timeout=30,
                      should_stop=lambda: time.monotonic() - started > 0.3)
    assert time.monotonic() - started < 2
    assert e.value.path == str(vids["3s"])
    _assert_reaped(pidfile)


def test_extract_timeout_kills_ffmpeg(vids, tmp_path):
    slow, pidfile = _slow_ffmpeg(tmp_path, readrate=0.5)
    started = time.monotonic()
    with pytest.raises(MediaError, match="timed out"):
        media.extract(slow, vids["3s"], tmp_path / "f", 1, lambda i, p: None, timeout=0.5)
    assert time.monotonic() - started < 2.5
    _assert_reaped(pidfile)


def test_extract_on_frame_error_kills_ffmpeg_and_propagates(vids, tmp_path):
    slow, pidfile = _slow_ffmpeg(tmp_path, readrate=1)

    def boom(i: int, p: Path) -> None:
        raise RuntimeError("store is gone")

    with pytest.raises(RuntimeError, match="store is gone"):
        media.extract(slow, vids["3s"], tmp_path / "f", 2, boom, timeout=30)
    _assert_reaped(pidfile)


@pytest.mark.parametrize("name", BAD)
def test_extract_rejects_bad_input_naming_the_file(vids, tmp_path, name):
    calls: list[int] = []
    with pytest.raises(InputError) as e:
        media.extract(FF, vids[name], tmp_path / "f", 1, lambda i, p: calls.append(i), timeout=30)
    assert e.value.path == str(vids[name])
    assert vids[name].name in str(e.value)
    assert calls == []
    # a lone still image is not probed by extract: it just yields no frame at 1 fps
    assert (BAD[name] if name != "png" else "no frames") in e.value.reason


def test_extract_rejects_a_file_cut_short_even_with_faststart(vids, tmp_path):
    with pytest.raises(InputError, match="truncated"):
        media.extract(FF, vids["truncated_faststart"], tmp_path / "f", 1, lambda i, p: None, timeout=30)


def test_extract_of_a_clip_too_short_for_the_rate_gives_no_frames(vids, tmp_path):
    with pytest.raises(InputError, match="no frames"):
        media.extract(FF, vids["short"], tmp_path / "f", 1, lambda i, p: None, timeout=30)


# ---------------------------------------------------------------------------------------------------- stitch


def _assert_slot_colours(video: Path, fps: float, duration: float, colours: list[tuple[int, int, int]]) -> None:
    for i, want in enumerate(colours):
        t = (i + 0.5) / fps
        if t >= duration:
            break
        got = frame_rgb(video, t)
        assert max(abs(a - b) for a, b in zip(got, want)) <= 12, f"slot {i} at t={t}: {got} != {want}"
    # the tail is the last frame shown (held or cut), never black or a later frame
    last = min(len(colours), int(duration * fps + 0.5)) - 1
    got = frame_rgb(video, duration - 0.02)
    assert max(abs(a - b) for a, b in zip(got, colours[last])) <= 12, f"tail: {got} != {colours[last]}"


@pytest.mark.parametrize("audio", [True, False], ids=["audio", "silent"])
@pytest.mark.parametrize("name, fps", [("3s", 1), ("3s", 2), ("2.5s", 1), ("2.5s", 2)])
@pytest.mark.parametrize("mixed", [False, True], ids=["one-size", "mixed-sizes"])
def test_stitch_matches_source_duration_audio_size_and_colours(vids, tmp_path, name, fps, audio, mixed):
    src = vids[name]
    p = media.probe(FF, src)
    n = media.extract(FF, src, tmp_path / "src", fps, lambda i, path: None, timeout=30)
    sizes = [(64, 64), (100, 40), (33, 77), (200, 100)] if mixed else [(320, 200)]
    colours = [COLOURS[i % len(COLOURS)] for i in range(n)]
    for i, c in enumerate(colours):
        make_png(tmp_path / "painted" / f"{i:06d}.png", c, sizes[i % len(sizes)])
    out = tmp_path / ".result.mp4.tmp"
    media.stitch(FF, tmp_path / "painted", fps=fps, duration=p.duration, size=media.output_size(p.width, p.height),
                 out=out, audio_src=src if audio else None, timeout=60)
    assert abs(probe_duration(out) - p.duration) <= ONE_OUTPUT_FRAME
    assert has_audio(out) is audio
    assert video_size(out) == (160, 120)
    _assert_slot_colours(out, fps, p.duration, colours)
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".shd-")] == []  # temp dir cleaned up


def test_stitch_holds_the_last_frame_when_frames_are_short(tmp_path):
    make_png(tmp_path / "f" / "000000.png", (255, 0, 0), (40, 30))
    make_png(tmp_path / "f" / "000001.png", (0, 0, 255), (40, 30))
    out = tmp_path / "out.mp4"
    media.stitch(FF, tmp_path / "f", fps=1, duration=3.4, size=media.output_size(81, 61), out=out, audio_src=None,
                 timeout=60)
    assert abs(probe_duration(out) - 3.4) <= ONE_OUTPUT_FRAME
    assert video_size(out) == (80, 60)
    _assert_slot_colours(out, 1, 3.4, [(255, 0, 0), (0, 0, 255), (0, 0, 255), (0, 0, 255)])


def _banded_png(path: Path, size: tuple[int, int], bands: list[tuple[int, tuple[int, int, int]]]) -> Path:
    """A PNG of vertical bands: (width, colour) from left to right."""
    w, h = size
    row = b"\x00" + b"".join(bytes(c) * bw for bw, c in bands)
    assert len(row) == 1 + 3 * w

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(row * h)) + chunk(b"IEND", b""))
    return path


GREEN, RED, BLUE, BLACK = (0, 255, 0), (255, 0, 0), (0, 0, 255), (0, 0, 0)


@pytest.mark.parametrize(
    "fit, top_middle, left_middle",
    [("pad", BLACK, GREEN), ("crop", RED, RED), ("stretch", RED, GREEN)],
)
def test_stitch_fit_modes(tmp_path, fit, top_middle, left_middle):
    # a 2:1 frame into 4:3: pad letterboxes top and bottom, crop cuts the green/blue side bands, stretch keeps both
    _banded_png(tmp_path / "f" / "000000.png", (200, 100), [(20, GREEN), (160, RED), (20, BLUE)])
    out = tmp_path / "out.mp4"
    media.stitch(FF, tmp_path / "f", fps=1, duration=1.0, size=(160, 120), out=out, audio_src=None, fit=fit,
                 timeout=60)
    for xy, want in (((80, 5), top_middle), ((4, 60), left_middle)):
        got = frame_rgb(out, 0.5, xy)
        assert max(abs(a - b) for a, b in zip(got, want)) <= 12, f"{fit} at {xy}: {got} != {want}"


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_a_jpeg_or_webp_painting_becomes_a_png_of_the_same_picture(tmp_path, suffix):
    painted = tmp_path / f"000002{suffix}"
    subprocess.run([FF, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i",
                    str(make_png(tmp_path / "src.png", (30, 200, 90), (40, 30))), str(painted)], check=True)
    dest = tmp_path / "seq" / "000002.png"
    dest.parent.mkdir()
    media.run(media.plan_png(FF, painted, dest), timeout=60, path_for_errors=painted, check=True)
    assert _is_complete_png(dest) and video_size(dest) == (40, 30)
    assert max(abs(a - b) for a, b in zip(frame_rgb(dest, 0.0), (30, 200, 90))) <= 12


def test_stitch_failure_is_a_media_error_naming_the_output(vids, tmp_path):
    make_png(tmp_path / "f" / "000000.png", (255, 0, 0), (40, 30))
    out = tmp_path / "out.mp4"
    with pytest.raises(MediaError) as e:  # the "audio source" has no audio stream
        media.stitch(FF, tmp_path / "f", fps=1, duration=1.0, size=(40, 30), out=out,
                     audio_src=vids["3s_silent"], timeout=60)
    assert e.value.path == str(out)
    with pytest.raises(MediaError):
        media.stitch(FF, tmp_path / "empty", fps=1, duration=1.0, size=(40, 30), out=out, audio_src=None, timeout=60)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system holding `folder`, but for about `leave` bytes."""
    reserve = folder / "reserve"
    reserve.write_bytes(b"\0" * leave)
    with open(folder / "ballast", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError:
            pass
    reserve.unlink()


def test_extract_into_a_full_disk_is_disk_full_not_a_bad_input(vids, tmp_path, tmpfs):
    """The reproduced case: frames filling the job folder once made the source "cannot be decoded"."""
    full = tmpfs(tmp_path / "full", "1m")
    _fill(full, leave=64 * 1024)  # room for ffmpeg's pid file and a frame or two, not for 15 frames
    with pytest.raises(DiskFull) as e:
        media.extract(FF, vids["3s"], full / "frames", 5, lambda i, path: None, timeout=30)
    assert e.value.path == str(full / "frames") and "no space left on device" in str(e.value)


def test_stitch_onto_a_full_disk_is_disk_full(tmp_path, tmpfs):
    make_png(tmp_path / "f" / "000000.png", (255, 0, 0), (320, 240))
    full = tmpfs(tmp_path / "full", "1m")
    _fill(full, leave=4096)  # room for the pid file only
    with pytest.raises(DiskFull):
        media.stitch(FF, tmp_path / "f", fps=1, duration=5.0, size=(320, 240), out=full / "out.mp4",
                     audio_src=None, timeout=60)


def test_verify_accepts_a_whole_video_and_refuses_a_cut_or_wrong_one(vids, tmp_path):
    media.verify(FF, vids["3s"], duration=3.0, tolerance=0.1, timeout=60)
    with pytest.raises(MediaError, match="lasts 3.00 s, not 5.00 s"):
        media.verify(FF, vids["3s"], duration=5.0, tolerance=0.1, timeout=60)
    for name in ("truncated", "truncated_faststart"):
        with pytest.raises(MediaError) as e:
            media.verify(FF, vids[name], duration=3.0, tolerance=0.1, timeout=60)
        assert e.value.path == str(vids[name])
    # Bytes damaged in the middle of the picture data: the file opens, but does not decode to the end.
    damaged = tmp_path / "damaged.mp4"
    data = bytearray(vids["3s_silent"].read_bytes())
    mdat = data.index(b"mdat")
    data[mdat + 2000:mdat + 6000] = bytes(4000)
    damaged.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="does not decode"):
        media.verify(FF, damaged, duration=3.0, tolerance=0.1, timeout=60)


# ---------------------------------------------------------------------------------------------------- the outputs
# (non-square pixels, transitions, the subtitle track, the contact sheet, img2img's source picture)


def test_a_source_with_non_square_pixels_is_extracted_at_the_shape_it_is_shown(tmp_path):
    src = make_video(tmp_path / "sar.mp4", seconds=2.0, size=(176, 144), sar=(128, 117), audio=False)
    p = media.probe(FF, src)
    assert (p.width, p.height, p.sar) == (192, 144, (128, 117))
    paths: list[Path] = []
    media.extract(FF, src, tmp_path / "f", 1, lambda i, path: paths.append(path), timeout=30, size=(192, 144))
    assert len(paths) == 2 and {png.size(x.read_bytes()) for x in (tmp_path / "f").glob("*.png")} == {(192, 144)}


def _three_paintings(tmp_path: Path) -> Path:
    for i, c in enumerate([RED, GREEN, BLUE]):
        make_png(tmp_path / "p" / f"{i:06d}.png", c, (64, 48))
    return tmp_path / "p"


def _far(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b)) > 40


@pytest.mark.parametrize("transition", ["crossfade", "motion"])
def test_a_transition_keeps_the_length_and_the_sound_and_goes_between_the_paintings(vids, tmp_path, transition):
    out = tmp_path / "out.mp4"
    media.stitch(FF, _three_paintings(tmp_path), fps=1, duration=3.0, size=(64, 48), out=out,
                 audio_src=vids["3s"], transition=transition, transition_seconds=0.5, timeout=60)
    assert abs(probe_duration(out) - 3.0) <= ONE_OUTPUT_FRAME and has_audio(out)
    for t, want in ((0.5, RED), (1.5, GREEN), (2.6, BLUE)):  # each painting holds between the changes
        got = frame_rgb(out, t)
        assert not _far(got, want), (t, got, want)
    for t, (a, b) in ((1.0, (RED, GREEN)), (2.0, (GREEN, BLUE))):  # the middle of a change is neither painting
        got = frame_rgb(out, t)
        assert _far(got, a) and _far(got, b), (t, got)


def test_the_subtitle_track_is_mov_text_titled_prompts_and_keeps_the_text_exactly(tmp_path):
    prompts = [r"a <b>bold</b> door & {\an8} sign", "a quiet street --> at night \\N"]
    cue_list = [sidecars.Cue(0.0, 1.0, prompts[0]), sidecars.Cue(1.0, 3.0, prompts[1])]
    srt = tmp_path / "p.srt"
    srt.write_text(sidecars.srt(cue_list), encoding="utf-8")
    out = tmp_path / "out.mp4"
    media.stitch(FF, _three_paintings(tmp_path), fps=1, duration=3.0, size=(64, 48), out=out, audio_src=None,
                 subtitles=srt, timeout=60)
    (track,) = stream_descriptions(out, "Subtitle")
    assert "mov_text" in track and "(eng)" in track and re.search(r"name\s+: Prompts", track)
    assert [t.replace(sidecars.WORD_JOINER, "") for t in subtitle_texts(out)] == prompts
    media.verify(FF, out, duration=3.0, tolerance=0.1, timeout=60)  # the track decodes too


def test_the_contact_sheet_has_the_layouts_size_whatever_the_pictures(tmp_path):
    d = tmp_path / "sheet"
    sizes = [(64, 48), (100, 30), (48, 64), (320, 240), (64, 48)]  # mixed, as paintings may be
    lay = sheet.layout(len(sizes), 4 / 3)
    for k, size in enumerate(sizes):
        make_png(d / "sources" / f"{k:06d}.png", RED, (160, 120))
        make_png(d / "paintings" / f"{k:06d}.png", COLOURS[k], size)
        (d / "labels").mkdir(exist_ok=True)
        (d / "labels" / f"{k:06d}.png").write_bytes(sheet.label(sheet.time_label(k), lay.cell[0]))
    out = tmp_path / "sheet.png"
    media.run(sheet.plan(FF, d / "sources", d / "paintings", d / "labels", out, lay, media.GLOBAL_ARGS),
              timeout=60, path_for_errors=out, check=True)
    assert png.size(out.read_bytes()) == lay.size == (1586, 342)
    x0, y0 = sheet.MARGIN, sheet.MARGIN
    pw, ph = lay.picture
    cell_w, cell_h = lay.cell
    for k in range(len(sizes)):  # each cell: the source on the left, its painting on the right
        col, row = k % lay.columns, k // lay.columns
        left = (x0 + col * (cell_w + sheet.PADDING) + pw // 2, y0 + row * (cell_h + sheet.PADDING) + ph // 2)
        right = (left[0] + pw + sheet.GAP, left[1])
        assert not _far(_pixel(out, left), RED) and not _far(_pixel(out, right), COLOURS[k]), k


def _pixel(path: Path, xy: tuple[int, int]) -> tuple[int, int, int]:
    w, h = png.size(path.read_bytes()) or (0, 0)
    data = subprocess.run([FF, "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                          capture_output=True, check=True).stdout
    i = (xy[1] * w + xy[0]) * 3
    return data[i], data[i + 1], data[i + 2]


def test_fit_picture_writes_the_picture_at_the_size_or_says_why_not(tmp_path):
    src = make_png(tmp_path / "f.png", GREEN, (192, 144))
    dest = tmp_path / "img2img" / "000000-1024x768.png"
    dest.parent.mkdir()
    media.fit_picture(FF, src, dest, size=(1024, 768), fit="crop", timeout=60)
    assert png.size(dest.read_bytes()) == (1024, 768) and os.listdir(dest.parent) == [dest.name]
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    with pytest.raises(MediaError) as e:
        media.fit_picture(FF, bad, tmp_path / "img2img" / "x.png", size=(64, 64), fit="pad", timeout=60)
    assert e.value.path == str(bad) and os.listdir(dest.parent) == [dest.name]

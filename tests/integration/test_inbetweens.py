"""The pictures between two paintings, with the real ffmpeg: FILM's clips counted and decoded without their ends,
the blends that stand in for a pair, and a stitch that spreads them across their gaps."""

from pathlib import Path

import pytest

from shd import inbetweens, media
from shd.errors import MediaError
from tests.videos import frame_rgb, frames_rgb, make_png, probe_duration

FFMPEG = media.find_ffmpeg()
RED, GREEN, BLUE = (200, 40, 40), (40, 200, 40), (40, 40, 200)


def near(a: tuple[int, ...], b: tuple[float, ...], tolerance: float = 12) -> bool:
    return max(abs(x - y) for x, y in zip(a, b)) <= tolerance


def way(a: tuple[int, int, int], b: tuple[int, int, int], f: float) -> tuple[float, ...]:
    return tuple(x + (y - x) * f for x, y in zip(a, b))


def test_a_clip_gives_the_pictures_between_its_first_and_last_frame(tmp_path: Path) -> None:
    a, b = make_png(tmp_path / "a.png", RED, (16, 8)), make_png(tmp_path / "b.png", BLUE, (16, 8))
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(inbetweens.blend_clip(FFMPEG, a, b, times=3, size=(16, 8), work=tmp_path / "w"))
    assert inbetweens.count_frames(FFMPEG, clip, timeout=30) == 9
    got = inbetweens.between(FFMPEG, clip, tmp_path / "between", timeout=30)
    assert [p.name for p in got] == [f"{j:06d}.png" for j in range(1, 8)] and not (tmp_path / "between" /
                                                                                  "000000.png").exists()
    assert all(near(frames_rgb(p)[0], way(RED, BLUE, j / 8)) for j, p in enumerate(got, start=1))
    mid = tmp_path / "mid.png"
    mid.write_bytes(inbetweens.blend_clip(FFMPEG, a, b, times=1, size=(16, 8), work=tmp_path / "w"))
    assert inbetweens.between(FFMPEG, mid, tmp_path / "unused", timeout=30) == [mid]
    assert not (tmp_path / "w").exists()


def test_a_clip_that_does_not_decode_is_a_media_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0\0\0\x18ftypmp42" + b"\0" * 200)
    with pytest.raises(MediaError, match="broken.mp4"):
        inbetweens.count_frames(FFMPEG, broken, timeout=30)
    with pytest.raises(MediaError, match="broken.mp4"):
        inbetweens.between(FFMPEG, broken, tmp_path / "between", timeout=30)


def test_a_blend_is_the_pictures_evenly_between_two_paintings_of_any_sizes(tmp_path: Path) -> None:
    a, b = make_png(tmp_path / "a.png", RED, (16, 8)), make_png(tmp_path / "b.png", BLUE, (10, 10))
    got = inbetweens.blend(FFMPEG, a, b, tmp_path / "x", count=3, size=(16, 8), fit="stretch", timeout=30)
    assert len(got) == 3 and all(near(frames_rgb(p)[0], way(RED, BLUE, j / 4), 1) for j, p in enumerate(got, 1))
    assert inbetweens.plan_blend("ffmpeg", a, b, tmp_path / "x", count=3, size=(16, 8))[-7:] == [
        "-f", "image2", "-frames", "3", "-start_number", "1", str(tmp_path / "x" / "%06d.png")]


def stitched(tmp_path: Path, *, duration: float, out_fps: int) -> Path:
    """Red, green and blue paintings a second apart, three blended pictures between each two (k = 2), stitched."""
    frames = tmp_path / "frames"
    paintings = [make_png(frames / f"{i:06d}.png", rgb, (32, 24)) for i, rgb in enumerate((RED, GREEN, BLUE))]
    between = [inbetweens.blend(FFMPEG, paintings[i], paintings[i + 1], tmp_path / f"b{i}", count=3, size=(32, 24),
                                fit="pad", timeout=30) for i in range(2)]
    out = tmp_path / "out.mp4"
    media.stitch(FFMPEG, frames, fps=1.0, duration=duration, size=(32, 24), out=out, audio_src=None, timeout=60,
                 transition="film", between=between, out_fps=out_fps)
    return out


def test_a_stitch_spreads_the_pictures_between_across_each_gap_and_keeps_each_painting_on_its_second(
        tmp_path: Path) -> None:
    """Three paintings, three pictures between each two (k = 2): the video lasts the source's 2.5 s, shows painting
    i at second i, the middle picture between at i + 0.5, and holds the last painting to the end."""
    out = stitched(tmp_path, duration=2.5, out_fps=30)
    assert abs(probe_duration(out) - 2.5) <= 1 / 30 + 0.01
    for t, rgb in [(0.0, RED), (1.0, GREEN), (2.0, BLUE), (2.45, BLUE), (0.5, way(RED, GREEN, 0.5)),
                   (1.5, way(GREEN, BLUE, 0.5)), (0.8, way(RED, GREEN, 0.75)), (1.3, way(GREEN, BLUE, 0.25))]:
        assert near(frame_rgb(out, t), rgb), (t, frame_rgb(out, t), rgb)


def test_the_output_keeps_its_own_frame_rate_and_at_2k_x_fps_shows_every_picture_once(tmp_path: Path) -> None:
    """The frame rate is pipeline.output_fps whatever FILM made: at output_fps = 2^k x fps (here 4 at k = 2) each
    output frame is the next picture, paintings on whole seconds, nothing dropped or shown twice."""
    out = stitched(tmp_path, duration=3.0, out_fps=4)
    expected = [way(RED, GREEN, j / 4) for j in range(4)] + [way(GREEN, BLUE, j / 4) for j in range(4)] + [BLUE] * 4
    got = frames_rgb(out)
    assert len(got) == 12 and all(near(g, e) for g, e in zip(got, expected)), got

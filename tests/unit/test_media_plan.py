"""Pure tests of shd.media: planned ffmpeg argv and parsing of recorded `ffmpeg -i` stderr. No ffmpeg runs here."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from shd import media
from shd.errors import InputError, MediaError

FF = "/opt/ff/ffmpeg"
SRC = Path("/videos/in.mp4")

# ---------------------------------------------------------------------------------------------------- recorded stderr
# All recorded from `ffmpeg -hide_banner -nostdin -i FILE` (ffmpeg 9.0, imageio-ffmpeg 0.8.1) unless noted.

GOOD_WITH_AUDIO = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'v3.mp4':
  Metadata:
    major_brand     : isom
    minor_version   : 512
    compatible_brands: isomiso2avc1mp41
    encoder         : Lavf63.1.102
  Duration: 00:00:03.00, start: 0.000000, bitrate: 159 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 160x120 [SAR 1:1 DAR 4:3], 81 kb/s, 10 fps, 10 tbr, 10240 tbn (default)
    Metadata:
      handler_name    : VideoHandler
      encoder         : Lavc63.1.102 libx264
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 69 kb/s (default)
    Metadata:
      handler_name    : SoundHandler
At least one output file must be specified
"""

GOOD_NO_AUDIO_OFFSET = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'off.mp4':
  Metadata:
    major_brand     : isom
    minor_version   : 512
    compatible_brands: isomiso2avc1mp41
    encoder         : Lavf63.1.102
  Duration: 00:00:02.50, start: 1.500000, bitrate: 86 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 160x120 [SAR 1:1 DAR 4:3], 82 kb/s, 10 fps, 10 tbr, 10240 tbn (default)
    Metadata:
      handler_name    : VideoHandler
      encoder         : Lavc63.1.102 libx264
At least one output file must be specified
"""

ROTATED = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'rot.mp4':
  Duration: 00:00:02.00, start: 0.000000, bitrate: 82 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 160x120 [SAR 1:1 DAR 4:3], 79 kb/s, 10 fps, 10 tbr, 10240 tbn (default)
    Metadata:
      handler_name    : VideoHandler
    Side data:
      Display Matrix: rotation of 90.00 degrees
At least one output file must be specified
"""

# Older ffmpeg (6.x) style: lower-case side data, audio first, a cover picture, NTSC rate, negative start.
OLDER_STYLE = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mov':
  Duration: 01:02:03.45, start: -0.021333, bitrate: 9000 kb/s
  Stream #0:0[0x1](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 256 kb/s (default)
  Stream #0:1[0x2](und): Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 300x300, 90k tbr, 90k tbn (attached pic)
  Stream #0:2[0x3](und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv, bt709), 1920x1080, 8000 kb/s, 29.97 fps, 29.97 tbr, 600 tbn (default)
    Side data:
      displaymatrix: rotation of -90.00 degrees
"""

NO_FPS = """\
Input #0, matroska,webm, from 'x.mkv':
  Duration: 00:00:04.00, start: 0.000000, bitrate: 100 kb/s
  Stream #0:0: Video: vp9 (Profile 0), yuv420p(tv), 320x240, SAR 1:1 DAR 4:3, 1k tbr, 1k tbn
"""

AUDIO_ONLY = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'ao.mp4':
  Metadata:
    major_brand     : isom
    minor_version   : 512
    compatible_brands: isomiso2mp41
    encoder         : Lavf63.1.102
  Duration: 00:00:02.00, start: 0.000000, bitrate: 75 kb/s
  Stream #0:0[0x1](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 69 kb/s (default)
    Metadata:
      handler_name    : SoundHandler
At least one output file must be specified
"""

PNG_AS_MP4 = """\
Input #0, png_pipe, from 'png.mp4':
  Duration: N/A, bitrate: N/A
  Stream #0:0: Video: png, rgb24(pc, gbr/unknown/unknown), 64x48 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 25 tbn
At least one output file must be specified
"""

MOOV_NOT_FOUND = """\
[in#0 @ 0x55fc6cffa080] moov atom not found
[in#0 @ 0x55fc6cff9d00] Error opening input: Invalid data found when processing input
Error opening input file trunc.mp4.
Error opening input files: Invalid data found when processing input
"""

TEXT_AS_MP4 = """\
[in#0 @ 0x5621c5479080] Format mov,mp4,m4a,3gp,3g2,mj2 detected only with low score of 1, misdetection possible!
[in#0 @ 0x5621c5479080] moov atom not found
[in#0 @ 0x5621c5478d00] Error opening input: Invalid data found when processing input
Error opening input file text.mp4.
Error opening input files: Invalid data found when processing input
"""

TEXT_AS_TXT = """\
[in#0 @ 0x563a69203d00] Error opening input: Invalid data found when processing input
Error opening input file t.txt.
Error opening input files: Invalid data found when processing input
"""

OLD_INVALID = "t.txt: Invalid data found when processing input\n"  # ffmpeg <= 6 wording

MISSING = """\
[in#0 @ 0x56293eef1d00] Error opening input: No such file or directory
Error opening input file missing.mp4.
Error opening input files: No such file or directory
"""

ZERO_DURATION = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'z.mp4':
  Duration: 00:00:00.00, start: 0.000000, bitrate: N/A
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 160x120, 10 fps, 10 tbr, 10240 tbn (default)
"""


# ---------------------------------------------------------------------------------------------------- parse_probe


def test_parse_good_video_with_audio():
    p = media.parse_probe(SRC, GOOD_WITH_AUDIO)
    assert p == media.Probe(
        duration=3.0, fps=10.0, width=160, height=120, has_audio=True, video_codec="h264", start_time=0.0
    )


def test_parse_good_video_without_audio_and_with_start_offset():
    p = media.parse_probe(SRC, GOOD_NO_AUDIO_OFFSET)
    assert (p.duration, p.has_audio, p.start_time, p.width, p.height) == (2.5, False, 1.5, 160, 120)


def test_parse_rotation_swaps_to_display_size():
    p = media.parse_probe(SRC, ROTATED)
    assert (p.width, p.height) == (120, 160)


def test_parse_older_style_skips_cover_art_and_reads_rotation():
    p = media.parse_probe(SRC, OLDER_STYLE)
    assert p.video_codec == "hevc"
    assert (p.width, p.height) == (1080, 1920)
    assert p.fps == pytest.approx(29.97)
    assert p.duration == pytest.approx(3723.45)
    assert p.start_time == pytest.approx(-0.021333)
    assert p.has_audio


SAR_CLIP = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'sar.mp4':
  Duration: 00:00:03.00, start: 0.000000, bitrate: 171 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 176x144 [SAR 128:117 DAR 1408:1053], 98 kb/s, 10 fps, 10 tbr, 10240 tbn (default)
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 69 kb/s (default)
At least one output file must be specified
"""


def test_parse_applies_the_sample_aspect_ratio():
    p = media.parse_probe(SRC, SAR_CLIP)
    assert (p.width, p.height, p.sar) == (192, 144, (128, 117))  # shown 4:3
    assert media.parse_probe(SRC, GOOD_WITH_AUDIO).sar == (1, 1)


def test_parse_rotation_turns_the_sample_aspect_ratio_too():
    rotated = SAR_CLIP.replace("(default)\n  Stream #0:1", "(default)\n    Side data:\n      Display Matrix: "
                               "rotation of -90.00 degrees\n  Stream #0:1")
    p = media.parse_probe(SRC, rotated)
    assert (p.width, p.height, p.sar) == (132, 176, (117, 128))  # shown 3:4


def test_parse_fps_falls_back_to_tbr():
    p = media.parse_probe(SRC, NO_FPS)
    assert p.fps == 1000.0 and (p.width, p.height) == (320, 240) and p.video_codec == "vp9"


@pytest.mark.parametrize(
    "stderr, words",
    [
        (AUDIO_ONLY, "no video stream"),
        (PNG_AS_MP4, "duration is unknown"),
        (ZERO_DURATION, "duration is zero"),
        (MOOV_NOT_FOUND, "moov atom not found"),
        (TEXT_AS_MP4, "not a video file"),
        (TEXT_AS_TXT, "not a video file"),
        (OLD_INVALID, "not a video file"),
        (MISSING, "does not exist"),
        ("", "cannot be read as a video"),
    ],
)
def test_parse_rejects_with_a_one_line_reason(stderr, words):
    with pytest.raises(InputError) as e:
        media.parse_probe(SRC, stderr)
    assert e.value.path == str(SRC)
    assert words in e.value.reason
    assert "\n" not in str(e.value)


def test_last_error_line_drops_prefixes_and_generic_trailers():
    assert media.last_error_line(MOOV_NOT_FOUND) == "Invalid data found when processing input"
    assert media.last_error_line("[h264 @ 0x1] broken\nConversion failed!\n") == "broken"
    assert media.last_error_line("") == ""


# ---------------------------------------------------------------------------------------------------- small pure helpers


def test_plan_probe():
    assert media.plan_probe(FF, SRC) == [FF, "-hide_banner", "-nostdin", "-i", str(SRC)]


def test_plan_png_converts_one_picture_quietly_overwriting():
    assert media.plan_png(FF, Path("/g/000004.jpg"), Path("/s/000004.png")) == [
        FF, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", "/g/000004.jpg", "/s/000004.png"]


@pytest.mark.parametrize(
    "index, fps, start, expected",
    [(0, 1, 0.0, 0.0), (2, 1, 0.0, 2.0), (3, 2, 0.0, 1.5), (1, 3, 0.0, 1 / 3), (4, 2, 1.5, 3.5), (0, 0.5, 2.0, 2.0)],
)
def test_frame_timestamp(index, fps, start, expected):
    assert media.frame_timestamp(index, fps, start) == pytest.approx(expected)


@pytest.mark.parametrize(
    "src, expected", [((160, 120), (160, 120)), ((161, 121), (160, 120)), ((1, 1), (2, 2)), ((1081, 1920), (1080, 1920))]
)
def test_output_size_is_even(src, expected):
    assert media.output_size(*src) == expected


def test_find_ffmpeg_prefers_the_configured_one(tmp_path):
    exe = tmp_path / "ffmpeg"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert media.find_ffmpeg(str(exe)) == str(exe)


def test_find_ffmpeg_rejects_a_missing_or_non_executable_configured_path(tmp_path):
    with pytest.raises(MediaError, match="does not exist") as e:
        media.find_ffmpeg(str(tmp_path / "nope"))
    assert e.value.path == str(tmp_path / "nope")
    plain = tmp_path / "plain"
    plain.write_text("x")
    plain.chmod(stat.S_IRUSR | stat.S_IWUSR)
    if os.access(plain, os.X_OK):  # root may execute anything
        pytest.skip("running as a user that can execute any file")
    with pytest.raises(MediaError, match="not executable"):
        media.find_ffmpeg(str(plain))


def test_find_ffmpeg_falls_back_to_path_then_imageio(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/ffmpeg")
    assert media.find_ffmpeg() == "/usr/bin/ffmpeg"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    import imageio_ffmpeg

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: "/site/imageio/ffmpeg")
    assert media.find_ffmpeg(None) == "/site/imageio/ffmpeg"


# ---------------------------------------------------------------------------------------------------- plan_extract


def _value(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("fps, text", [(1, "fps=1"), (2.0, "fps=2"), (0.5, "fps=0.5"), (2.5, "fps=2.5")])
def test_plan_extract(fps, text, tmp_path):
    argv = media.plan_extract(FF, SRC, tmp_path, fps)
    assert argv[0] == FF
    assert argv[1:3] == ["-hide_banner", "-nostdin"]
    assert _value(argv, "-loglevel") == "error"
    assert _value(argv, "-i") == str(SRC)
    assert _value(argv, "-vf") == text
    assert _value(argv, "-start_number") == "0"
    assert _value(argv, "-map") == "0:V:0"  # first real video stream, never cover art
    assert _value(argv, "-atomic_writing") == "1"
    assert argv[-1] == str(tmp_path / "%06d.png")


def test_plan_extract_scales_non_square_pixels_to_the_display_size(tmp_path):
    argv = media.plan_extract(FF, SRC, tmp_path, 1, size=(192, 144))
    assert _value(argv, "-vf") == "fps=1,scale=192:144,setsar=1"


def test_plan_verify_decodes_every_stream_subtitles_as_text():
    argv = media.plan_verify(FF, Path("/v.mp4"))
    assert _value(argv, "-map") == "0" and _value(argv, "-c:s") == "text" and argv[-3:] == ["-f", "null", "-"]


def test_plan_fit_picture_writes_one_png_of_the_size():
    argv = media.plan_fit_picture(FF, Path("/f/000003.png"), Path("/i/x.png"), size=(1024, 768), fit="crop")
    graph = _graph(argv)
    assert "scale=1024:768:force_original_aspect_ratio=increase" in graph and "crop=1024:768" in graph
    assert _value(argv, "-vframes") == "1" and argv[-1] == "/i/x.png"


# ---------------------------------------------------------------------------------------------------- plan_stitch


def _stitch(**kw) -> list[str]:
    args = dict(duration=2.5, size=(160, 120), out=Path("/out/.x.mp4.tmp"), audio_src=None)
    args.update(kw)
    return media.plan_stitch(FF, Path("/run/timeline.ffconcat"), **args)


def _graph(argv: list[str]) -> str:
    return _value(argv, "-filter_complex")


def test_plan_stitch_reads_the_timeline_and_encodes_h264_to_the_duration():
    argv = _stitch()
    assert argv[0] == FF and "-y" in argv and _value(argv, "-loglevel") == "error"
    assert _value(argv, "-f") == "concat"  # the first -f is the input's
    assert _value(argv, "-safe") == "0"  # the script names pictures by absolute path
    assert _value(argv, "-i") == "/run/timeline.ffconcat"
    assert argv[-1] == "/out/.x.mp4.tmp"
    out_opts = argv[argv.index("-filter_complex") :]
    assert _value(out_opts, "-f") == "mp4"
    assert _value(argv, "-c:v") == "libx264"
    assert _value(argv, "-crf") == "18"
    assert _value(argv, "-movflags") == "+faststart"
    assert _value(argv, "-t") == "2.5"
    graph = _graph(argv)
    assert "fps=fps=30" in graph and "setsar=1" in graph
    assert graph.index("setsar=1") < graph.index("fps=fps=30") < graph.index("format=yuv420p")


def test_plan_stitch_rates_and_quality():
    argv = _stitch(out_fps=25, crf=23, duration=3.0)
    assert "fps=fps=25" in _graph(argv)
    assert _value(argv, "-crf") == "23"
    assert _value(argv, "-t") == "3"


@pytest.mark.parametrize("transition, text", [
    ("cut", "fps=fps=30["),
    ("crossfade", "framerate=fps=30:interp_end=255:interp_start=0:scene=100"),
    ("motion", "minterpolate=fps=30:mc_mode=aobmc:me_mode=bidir:mi_mode=mci:scd=none"),
])
def test_plan_stitch_makes_each_transition_with_its_filter(transition, text):
    graph = _graph(_stitch(transition=transition))
    assert text in graph
    others = {"cut": "fps=fps", "crossfade": "framerate=", "motion": "minterpolate="}
    assert [t for t, f in others.items() if f in graph] == [transition]


@pytest.mark.parametrize(
    "fit, present, absent",
    [
        ("pad", ["scale=160:120:", "force_original_aspect_ratio=decrease", "pad=160:120:(ow-iw)/2:(oh-ih)/2:color=black"],
         ["crop="]),
        ("crop", ["scale=160:120:force_original_aspect_ratio=increase", "crop=160:120"], ["]pad="]),
        ("stretch", ["scale=160:120[", "setsar=1"], ["]pad=", "crop=", "force_original_aspect_ratio"]),
    ],
)
def test_plan_stitch_fit(fit, present, absent):
    graph = _graph(_stitch(fit=fit))
    for text in present:
        assert text in graph
    for text in absent:
        assert text not in graph


def test_plan_stitch_rejects_unknown_fit_and_odd_size():
    with pytest.raises(ValueError, match="fit"):
        _stitch(fit="zoom")
    with pytest.raises(ValueError, match="even"):
        _stitch(size=(161, 120))


def test_plan_stitch_with_audio_maps_the_first_audio_stream():
    argv = _stitch(audio_src=SRC)
    assert argv.count("-i") == 2
    assert argv[argv.index("-i", argv.index("-i") + 1) + 1] == str(SRC)
    maps = [argv[i + 1] for i, a in enumerate(argv) if a == "-map"]
    assert maps[1:] == ["1:a:0"] and maps[0].startswith("[")
    assert _value(argv, "-c:a") == "aac"
    assert _value(argv, "-t") == "2.5"  # one -t cuts audio and video alike


def test_plan_stitch_without_audio_maps_video_only():
    argv = _stitch()
    assert argv.count("-i") == 1
    maps = [argv[i + 1] for i, a in enumerate(argv) if a == "-map"]
    assert len(maps) == 1 and maps[0].startswith("[")
    assert "-c:a" not in argv and "1:a:0" not in argv and "-c:s" not in argv


def test_plan_stitch_adds_the_subtitles_as_a_mov_text_track_titled_prompts():
    argv = _stitch(audio_src=SRC, subtitles=Path("/run/prompts.srt"))
    inputs = [argv[i + 1] for i, a in enumerate(argv) if a == "-i"]
    assert inputs == ["/run/timeline.ffconcat", str(SRC), "/run/prompts.srt"]
    maps = [argv[i + 1] for i, a in enumerate(argv) if a == "-map"]
    assert maps[1:] == ["1:a:0", "2:s:0"]
    assert _value(argv, "-c:s") == "mov_text"
    tags = [argv[i + 1] for i, a in enumerate(argv) if a == "-metadata:s:s:0"]
    assert tags == ["title=Prompts", "handler_name=Prompts", "language=eng"]
    assert argv.index("-metadata:s:s:0") < len(argv) - 1 and argv[-1] == "/out/.x.mp4.tmp"  # output options


def test_plan_normalize_has_no_timing_filters():
    argv = media.plan_normalize(FF, Path("/frames"), Path("/tmp/fit"), size=(64, 48), fit="crop")
    graph = _graph(argv)
    assert "crop=64:48" in graph and "fps=" not in graph and "tpad" not in graph
    assert _value(argv, "-fps_mode") == "passthrough"
    assert argv[-1] == "/tmp/fit/%06d.png"


def test_every_configurable_transition_has_its_filter():
    from shd import config

    assert set(media.TRANSITION_FILTERS) == set(config.TRANSITIONS)

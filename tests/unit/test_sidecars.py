"""The text files beside every output, pure: prompts.csv, the .srt and .vtt cues, and their escaping."""

import csv
import io
from dataclasses import dataclass

from shd.fill import plan_fill
from shd.sidecars import WORD_JOINER, Cue, cues, prompts_csv, srt, srt_text, vtt, vtt_text


@dataclass(frozen=True)
class F:
    idx: int
    ts: float
    state: str = "generated"
    prompt: str | None = None
    seed: int | None = None
    filled_with: str | None = None
    error: str | None = None


def frames(*prompts: str | None, fps: float = 1.0) -> list[F]:
    return [F(i, i / fps, "generated" if p else "failed", p, 100 + i if p else None) for i, p in enumerate(prompts)]


def test_prompts_csv_starts_with_the_first_versions_columns_and_quotes_properly() -> None:
    rows = [F(0, 0.0, "generated", 'a "red" door, at night', 7),
            F(1, 1.0, "failed", None, None, "held frame 0", "model error: NSFW content detected")]
    text = prompts_csv(rows)
    assert text.startswith("filename,prompt,time,seed,state,filled_with,error\r\n")
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[1:] == [["output_0001.png", 'a "red" door, at night', "0.000", "7", "generated", "", ""],
                          ["output_0002.png", "", "1.000", "", "failed", "held frame 0",
                           "model error: NSFW content detected"]]


def test_one_cue_per_painted_frame_timed_as_the_video_shows_it() -> None:
    fs = frames("a", "b", "c")
    assert cues(fs, plan_fill([True] * 3, "hold"), duration=2.6) == [
        Cue(0.0, 1.0, "a"), Cue(1.0, 2.0, "b"), Cue(2.0, 2.6, "c")]
    fs2 = frames("a", "b", "c", "d", fps=2)
    assert [(c.start, c.end) for c in cues(fs2, plan_fill([True] * 4, "hold"), duration=2.0)] == [
        (0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]


def test_a_held_slot_extends_the_painting_shown_and_a_source_slot_has_no_cue() -> None:
    fs = frames("a", None, "c")
    assert cues(fs, plan_fill([True, False, True], "hold"), duration=3.0) == [Cue(0.0, 2.0, "a"), Cue(2.0, 3.0, "c")]
    assert cues(fs, plan_fill([True, False, True], "source"), duration=3.0) == [Cue(0.0, 1.0, "a"),
                                                                                Cue(2.0, 3.0, "c")]


def test_nothing_starts_at_or_after_the_end() -> None:
    fs = frames("a", "b", "c")
    assert cues(fs, plan_fill([True] * 3, "hold"), duration=1.5) == [Cue(0.0, 1.0, "a"), Cue(1.0, 1.5, "b")]


def test_srt_and_vtt_format_times_and_number_cues() -> None:
    cue_list = [Cue(0.0, 1.0, "first"), Cue(3661.5, 3662.25, "second")]
    assert srt(cue_list) == ("1\n00:00:00,000 --> 00:00:01,000\nfirst\n\n"
                             "2\n01:01:01,500 --> 01:01:02,250\nsecond\n\n")
    assert vtt(cue_list) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nfirst\n\n"
                             "01:01:01.500 --> 01:01:02.250\nsecond\n\n")


def test_markup_in_a_prompt_stays_text_in_each_format() -> None:
    prompt = r"a <b>bold</b> & {\an8} sign --> here \N"
    assert vtt_text(prompt) == r"a &lt;b&gt;bold&lt;/b&gt; &amp; {\an8} sign --&gt; here \N"
    escaped = srt_text(prompt)
    assert escaped.replace(WORD_JOINER, "") == prompt
    for markup in ("<b", "</", "{\\", "\\a", "\\N", "-->"):
        assert markup not in escaped, markup
    assert "\n" not in srt([Cue(0, 1, "two\nlines")]).split("\n", 2)[2].rstrip("\n")  # a cue is one line of text

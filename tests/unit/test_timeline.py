"""What the stitched video shows when, pure: the timed pictures and their concat script."""

from pathlib import Path

import pytest

from shd.timeline import TAIL, Shown, ffconcat, held, with_transitions

A, B, C = Path("/p/a.png"), Path("/p/b.png"), Path("/p/c.png")


def test_held_shows_picture_i_from_i_over_fps() -> None:
    assert held([A, B, C], 1) == [Shown(A, 0.0), Shown(B, 1.0), Shown(C, 2.0)]
    assert held([A, B], 2) == [Shown(A, 0.0), Shown(B, 0.5)]


def test_a_transition_is_centred_on_the_cut_and_the_picture_holds_between() -> None:
    assert with_transitions(held([A, B, C], 1), 0.5) == [
        Shown(A, 0.0), Shown(A, 0.75), Shown(B, 1.25), Shown(B, 1.75), Shown(C, 2.25)]


def test_a_transition_is_at_most_as_long_as_a_picture_is_on_screen() -> None:
    # 2 fps: half a second per picture, so a 2 s transition takes the whole half second: B holds no moment.
    assert with_transitions(held([A, B, C], 2), 2.0) == [Shown(A, 0.0), Shown(A, 0.25), Shown(B, 0.75),
                                                         Shown(C, 1.25)]
    assert with_transitions([Shown(A, 0.0)], 0.5) == [Shown(A, 0.0)]


def _entries(script: str) -> list[tuple[str, float]]:
    lines = script.splitlines()
    assert lines[0] == "ffconcat version 1.0"
    files = [ln.removeprefix("file ") for ln in lines[1::2]]
    durations = [float(ln.removeprefix("duration ")) for ln in lines[2::2]]
    return list(zip(files, durations))


def test_the_concat_script_plays_each_picture_until_the_next_and_holds_the_last_past_the_end() -> None:
    entries = _entries(ffconcat(held([A, B], 1), end=3.4, out_fps=30))
    assert entries[:2] == [("'/p/a.png'", 1.0), ("'/p/b.png'", 2.4)]  # b from 1 s to the end
    assert entries[2:] == [("'/p/b.png'", round(1 / 30, 6))] * TAIL  # then listed again past it
    assert len(entries) == 2 + TAIL


def test_the_concat_script_times_add_up_without_drift() -> None:
    shown = held([A] * 601, 3)  # thirds of a second do not add up in floating point
    entries = _entries(ffconcat(shown, end=200.5, out_fps=30))
    starts = [0.0]
    for _, d in entries[:-1]:
        starts.append(starts[-1] + d)
    assert starts[600] == pytest.approx(200.0, abs=1e-6)


def test_the_concat_script_quotes_names_and_refuses_what_it_cannot_write() -> None:
    script = ffconcat([Shown(Path("/x/it's here.png"), 0.0)], end=1.0, out_fps=30)
    assert "file '/x/it'\\''s here.png'" in script
    with pytest.raises(ValueError, match="line break"):
        ffconcat([Shown(Path("/x/a\nb.png"), 0.0)], end=1.0, out_fps=30)
    with pytest.raises(ValueError, match="increasing"):
        ffconcat([Shown(A, 1.0), Shown(B, 1.0)], end=2.0, out_fps=30)

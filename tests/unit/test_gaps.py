"""FILM's gaps, pure: which become pairs as soon as both paintings exist, and what the video shows in each."""

from shd.fill import plan_fill
from shd.gaps import Gap, plan, ready


def test_a_gap_is_ready_once_both_its_frames_are_painted_whatever_the_others_do() -> None:
    assert ready([True, True, False, True, True]) == [0, 3]
    assert ready([True]) == [] and ready([]) == []


def test_each_gap_shows_films_pictures_when_its_pair_was_interpolated() -> None:
    slots = plan_fill([True, True, True], "hold")
    assert plan(slots, {0, 1}, {}) == [Gap(0, True), Gap(1, True)]


def test_a_pair_that_failed_or_was_not_interpolated_is_crossfaded_saying_why() -> None:
    slots = plan_fill([True, True, True], "hold")
    assert plan(slots, {1}, {0: "model error: out of shapes"}) == [
        Gap(0, False, "model error: out of shapes"), Gap(1, True)]
    assert plan(slots, set(), {}) == [Gap(0, False, "not interpolated"), Gap(1, False, "not interpolated")]


def test_a_frame_that_was_not_painted_crossfades_both_its_gaps_and_a_held_picture_needs_no_blend() -> None:
    """Frame 1 failed: held, it shows frame 0's painting (the gap 0-1 is a hold), then a crossfade into frame 2;
    with the source policy, its own picture, crossfaded both ways."""
    held = plan(plan_fill([True, False, True], "hold"), {0, 1}, {})
    assert held == [Gap(0, False, "frame 1 was not painted", blend=False),
                    Gap(1, False, "frame 1 was not painted", blend=True)]
    source = plan(plan_fill([True, False, True], "source"), set(), {})
    assert [g.blend for g in source] == [True, True] and not any(g.film for g in source)


def test_a_single_frame_has_no_gap() -> None:
    assert plan(plan_fill([True], "hold"), set(), {}) == []

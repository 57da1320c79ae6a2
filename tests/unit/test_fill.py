"""The pure fill policy: what stands in the output slot of a frame that could not be painted."""

import pytest

from shd.fill import FillRefused, Slot, plan_fill


def test_all_painted_means_nothing_is_filled() -> None:
    slots = plan_fill([True, True, True], "hold")
    assert [s.filled for s in slots] == [False, False, False]


def test_hold_repeats_the_previous_painted_frame() -> None:
    slots = plan_fill([True, False, False, True], "hold")
    assert slots[1] == Slot(1, "generated", 0) and slots[2] == Slot(2, "generated", 0)
    assert slots[1].filled and not slots[3].filled


def test_hold_at_the_start_uses_the_first_painted_frame_and_nothing_painted_uses_the_source() -> None:
    assert plan_fill([False, True], "hold")[0] == Slot(0, "generated", 1)
    assert plan_fill([False, False], "hold") == [Slot(0, "source", 0), Slot(1, "source", 1)]


def test_source_policy_uses_the_frames_own_source_picture() -> None:
    assert plan_fill([True, False], "source")[1] == Slot(1, "source", 1)


def test_fail_policy_refuses_naming_the_first_missing_frame() -> None:
    with pytest.raises(FillRefused, match="2 frame.*first: frame 1"):
        plan_fill([True, False, False], "fail")
    assert len(plan_fill([True], "fail")) == 1

"""The pure state machine: which job and frame transitions are legal."""

import pytest

from shd import states
from shd.errors import IllegalTransition
from shd.states import FrameState as F
from shd.states import JobState as J


def test_the_happy_path_of_a_job_is_legal() -> None:
    """queued -> extracting -> running -> stitching -> done, step by step."""
    path = [J.QUEUED, J.EXTRACTING, J.RUNNING, J.STITCHING, J.DONE]
    for a, b in zip(path, path[1:]):
        assert states.job_can(a, b)


def test_a_job_cannot_skip_steps_and_leaves_done_only_to_paint_its_failed_frames_again() -> None:
    assert not states.job_can(J.QUEUED, J.RUNNING)
    assert not states.job_can(J.EXTRACTING, J.DONE)
    assert [target for target in J if states.job_can(J.DONE, target)] == [J.RUNNING]  # `shd retry` of a done job


def test_every_unfinished_job_can_fail_or_be_canceled_and_then_retried() -> None:
    for s in states.UNFINISHED_JOBS:
        assert states.job_can(s, J.FAILED) and states.job_can(s, J.CANCELED)
    assert states.job_can(J.FAILED, J.QUEUED) and states.job_can(J.CANCELED, J.QUEUED)


def test_frames_move_extracted_prompted_generated_through_in_flight_states() -> None:
    path = [F.EXTRACTED, F.PROMPTING, F.PROMPTED, F.GENERATING, F.GENERATED]
    for a, b in zip(path, path[1:]):
        assert states.frame_can(a, b)
    assert not states.frame_can(F.EXTRACTED, F.GENERATED)
    assert not states.frame_can(F.GENERATED, F.FAILED)


def test_check_raises_illegal_transition_naming_the_frame() -> None:
    with pytest.raises(IllegalTransition, match=r"job j1 frame 3: illegal transition generated -> prompting"):
        states.check_frame("j1", 3, F.GENERATED, F.PROMPTING)
    with pytest.raises(IllegalTransition, match="job j1"):
        states.check_job("j1", J.DONE, J.QUEUED)


def test_retry_sends_a_frame_back_to_the_first_stage_it_still_needs() -> None:
    assert states.retry_state(has_prompt=True) == F.PROMPTED
    assert states.retry_state(has_prompt=False) == F.EXTRACTED
    assert states.STAGE_FOR[F.EXTRACTED] == states.Stage.PROMPT
    assert states.STAGE_FOR[F.GENERATING] == states.Stage.IMAGE
    assert states.STAGE_FOR[F.GENERATED] is None

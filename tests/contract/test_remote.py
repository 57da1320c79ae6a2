"""The backend contract (shd/backends/base.py), written once and run against every backend in `BACKENDS`: what the
scheduler relies on to record every paid call, resume it, never pay twice, and know what each failure means."""

from __future__ import annotations

from pathlib import Path

import pytest

from shd.backends.base import ledger_form
from shd.errors import AuthFailed, ModelFailed, OutputGone, RateLimited, Rejected, Transient
from shd.scheduler.film_stage import clip_suffix
from shd.scheduler.stages import image_suffix
from tests.contract.harnesses import Harness
from tests.videos import frames_rgb, make_png, video_size


@pytest.fixture
def frame(tmp_path: Path) -> Path:
    return make_png(tmp_path / "000003.png", (200, 40, 40), (8, 8))


def test_a_quick_prediction_comes_back_finished_from_its_create_and_reads_the_same_by_id(
        h: Harness, frame: Path) -> None:
    """One create, one prediction: the prompt from the uploaded frame, then a picture painted from it."""
    prompter, painter = h.backend.prompter, h.backend.painter
    described = h.remote.create(prompter.ref, prompter.input_for(frame))
    assert described.status == "succeeded" and described.remote_id
    prompt = prompter.result(described)
    assert prompt and "\n" not in prompt and prompt == prompt.strip()
    assert h.remote.get(described.remote_id) == described

    painted = h.remote.create(painter.ref, painter.input_for(prompt, 7))
    assert painted.status == "succeeded" and painted.remote_id != described.remote_id
    assert image_suffix(painter.result(painted)) == ".png"
    assert h.creates() == 2


def test_a_running_prediction_gives_its_id_at_once_and_any_client_can_read_and_cancel_it_by_that_id(
        h: Harness, frame: Path) -> None:
    """The create returns within its wait with an id (the ledger records it before shd waits); after a restart a
    new client picks the prediction up by that id instead of creating it again. A finished one stays finished."""
    prompter = h.backend.prompter
    h.stick_next_prediction()
    running = h.remote.create(prompter.ref, prompter.input_for(frame))
    assert running.status in ("starting", "processing") and running.remote_id
    restarted = h.new_remote()
    assert restarted.get(running.remote_id).status in ("starting", "processing")
    restarted.cancel(running.remote_id)
    assert h.settle(h.remote, running.remote_id).status == "canceled"
    done = h.remote.create(prompter.ref, prompter.input_for(frame))
    restarted.cancel(done.remote_id)
    assert restarted.get(done.remote_id) == done
    assert h.creates() == 2


def test_a_prediction_that_outlasts_its_create_is_polled_to_its_output(h: Harness, frame: Path) -> None:
    h.slow_predictions(1.2)
    prompter = h.backend.prompter
    started = h.remote.create(prompter.ref, prompter.input_for(frame))
    finished = h.settle(h.remote, started.remote_id)
    assert finished.status == "succeeded" and finished.remote_id == started.remote_id
    assert prompter.result(finished) and finished.predict_time
    assert h.creates() == 1


def test_a_create_whose_answer_was_lost_may_have_been_created_and_is_found_by_its_input(
        h: Harness, frame: Path) -> None:
    prompter = h.backend.prompter
    sent_at = h.now()
    inp = prompter.input_for(frame)
    h.lose_next_create_answer()
    with pytest.raises(Transient) as lost:
        h.remote.create(prompter.ref, inp)
    assert lost.value.maybe_created
    found = h.remote.find(prompter.ref, ledger_form(inp), sent_at)
    assert found is not None and h.creates() == 1
    assert prompter.result(h.settle(h.remote, found.remote_id))
    other = make_png(frame.with_name("000004.png"), (1, 2, 3), (8, 8))
    assert h.remote.find(prompter.ref, ledger_form(prompter.input_for(other)), sent_at) is None


def test_an_expired_output_or_a_vanished_prediction_is_output_gone(h: Harness, frame: Path) -> None:
    prompter, painter = h.backend.prompter, h.backend.painter
    described = h.remote.create(prompter.ref, prompter.input_for(frame))
    painted = h.remote.create(painter.ref, painter.input_for(prompter.result(described), 7))
    (image,) = painted.output
    h.expire_outputs()
    after = h.remote.get(described.remote_id)
    assert after.status == "succeeded" and after.output is None
    with pytest.raises(OutputGone):
        prompter.result(after)
    with pytest.raises(OutputGone):
        h.remote.fetch(image)
    h.forget(painted.remote_id)
    with pytest.raises(OutputGone):
        h.remote.get(painted.remote_id)


def test_a_rate_limited_create_carries_the_servers_hint_and_creates_nothing(h: Harness, frame: Path) -> None:
    prompter = h.backend.prompter
    inp = prompter.input_for(frame)
    h.refuse_next_create("rate_limited", retry_after=7)
    with pytest.raises(RateLimited) as limited:
        h.remote.create(prompter.ref, inp)
    assert limited.value.retry_after == 7.0 and h.creates() == 0
    assert h.remote.create(prompter.ref, inp).status == "succeeded"


def test_a_server_error_on_create_is_transient_and_created_nothing(h: Harness, frame: Path) -> None:
    prompter = h.backend.prompter
    inp = prompter.input_for(frame)
    h.refuse_next_create("server_error")
    with pytest.raises(Transient) as failed:
        h.remote.create(prompter.ref, inp)
    assert not isinstance(failed.value, RateLimited) and not failed.value.maybe_created
    assert h.creates() == 0


def test_a_service_that_cannot_be_reached_is_transient_and_nothing_was_created(h: Harness, frame: Path) -> None:
    inp = h.backend.prompter.input_for(frame)
    with pytest.raises(Transient) as unreachable:
        h.unreachable_remote().create(h.backend.prompter.ref, inp)
    assert not unreachable.value.maybe_created and unreachable.value.unreachable and h.creates() == 0


def test_refused_credentials_are_auth_failed_until_the_accepted_token_is_set(h: Harness, frame: Path) -> None:
    prompter = h.backend.prompter
    inp = prompter.input_for(frame)
    h.accept_only("r8_rotated")
    with pytest.raises(AuthFailed):
        h.remote.create(prompter.ref, inp)
    with pytest.raises(AuthFailed):
        h.remote.check_auth()
    assert h.creates() == 0
    h.remote.set_token("r8_rotated")
    h.remote.check_auth()
    assert h.remote.create(prompter.ref, inp).status == "succeeded"


def test_an_input_the_service_refuses_is_rejected_and_an_unreadable_frame_names_its_file(
        h: Harness, frame: Path) -> None:
    prompter = h.backend.prompter
    inp = prompter.input_for(frame)
    h.refuse_next_create("rejected")
    with pytest.raises(Rejected):
        h.remote.create(prompter.ref, inp)
    assert h.creates() == 0
    with pytest.raises(Rejected, match=r"000009\.png: cannot read frame"):
        h.remote.upload(frame.with_name("000009.png"))


@pytest.mark.parametrize(("kind", "error", "new_seed"), [
    ("nsfw", ModelFailed, True), ("bad_input", ModelFailed, False), ("interrupted", Transient, False)])
def test_a_failed_prediction_says_what_follows(h: Harness, frame: Path, kind: str, error: type[Exception],
                                               new_seed: bool) -> None:
    """NSFW: another seed may pass. A model that cannot use this input: the frame fails. The service's own
    interruption: retry."""
    painter = h.backend.painter
    h.fail_next_prediction(kind)
    failed = h.settle(h.remote, h.remote.create(painter.ref, painter.input_for("a red door", 7)).remote_id)
    assert failed.status == "failed" and failed.error
    assert failed.predict_time is not None  # it ran, so it is billed: shd counts its cost
    reason = h.remote.failure(failed)
    assert type(reason) is error
    assert getattr(reason, "retry_with_new_seed", False) is new_seed


def test_film_answers_a_png_midpoint_for_one_interpolation_and_a_clip_of_2k_plus_1_frames_otherwise(
        h: Harness, tmp_path: Path) -> None:
    """What the FILM stage relies on from every backend: the clip's first and last frames are the two pictures, and
    the frames between lead from one to the other."""
    film = h.backend.interpolator
    first = make_png(tmp_path / "000001.png", (200, 40, 40), (16, 8))
    second = make_png(tmp_path / "000002.png", (40, 40, 200), (16, 8))
    mid = film.result(h.settle(h.remote, h.remote.create(film.ref, film.input_for(first, second, 1)).remote_id))
    (tmp_path / "mid.png").write_bytes(mid)
    assert clip_suffix(mid) == ".png" and frames_rgb(tmp_path / "mid.png") == [(120, 40, 120)]
    clip = film.result(h.settle(h.remote, h.remote.create(film.ref, film.input_for(first, second, 2)).remote_id))
    (tmp_path / "clip.mp4").write_bytes(clip)
    reds = [rgb[0] for rgb in frames_rgb(tmp_path / "clip.mp4")]
    assert clip_suffix(clip) == ".mp4" and video_size(tmp_path / "clip.mp4") == (16, 8)
    assert len(reds) == 5 and abs(reds[0] - 200) <= 12 and abs(reds[-1] - 40) <= 12
    assert all(a > b for a, b in zip(reds, reds[1:]))
    assert h.creates() == 2

"""The scheduler over the in-memory backend: a real store (SQLite), real threads, a real prediction service in this
process, and no HTTP, so each rule of "Calling Replicate safely" is checked in well under a second."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shd import config
from shd.backends import models
from shd.backends.memory import MemoryRemote, MemoryService
from shd.errors import ModelFailed, RateLimited, Rejected, Transient
from shd.scheduler import Engine, Task
from shd.states import FrameState, JobState, Stage
from shd.store import Frame, Prediction, Store
from tests.e2e.harness import wait_for
from tests.videos import make_png

SETTINGS = {"concurrency": 4, "poll_interval": 0.01, "backoff_base": 0.01, "backoff_max": 0.05, "max_attempts": 3,
            "model_retries": 2, "seed": 100, "creations_per_minute": 6000, "auth_recheck": 3600,
            "image_input": {"width": 8, "height": 8}}


@dataclass
class Rig:
    tmp: Path
    service: MemoryService
    store: Store
    engine: Engine

    def job(self, job_id: str, frames: int) -> str:
        """A running job whose extracted frames are handed to the engine."""
        work = self.tmp / "jobs" / job_id
        self.store.create_job(job_id, source_name=f"{job_id}.mp4", origin_path=work / "src.mp4", source_path=None,
                              work_dir=work, mode="process", fps=1.0)
        self.store.transition_job(job_id, JobState.EXTRACTING)
        self.store.transition_job(job_id, JobState.RUNNING)
        for i in range(frames):
            path = make_png(work / "frames" / f"{i:06d}.png", (10 * i, 90, len(job_id)), (8, 8))
            self.store.add_frame(job_id, i, float(i), path)
            self.engine.enqueue(Task(job_id, i, Stage.PROMPT))
        return job_id

    def finished(self, job_id: str, timeout: float = 30.0) -> list[Frame]:
        """Wait (on the engine's frame_done) until every frame of the job is generated or failed."""
        def done() -> list[Frame] | None:
            frames = self.store.frames(job_id)
            return frames if all(f.state in (FrameState.GENERATED, FrameState.FAILED) for f in frames) else None

        with self.engine.frame_done:
            if not self.engine.frame_done.wait_for(done, timeout):
                raise AssertionError(f"job {job_id}: frames still {[f.state for f in self.store.frames(job_id)]}")
        return done() or []

    def ledger(self, job_id: str, stage: Stage | None = None) -> list[Prediction]:
        return [p for p in self.store.predictions(job_id) if stage is None or p.stage == stage]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(token_provider: Callable[[], str] | None = None, **settings: Any) -> Rig:
        cfg = config.from_mapping({"replicate": {**SETTINGS, **settings}}, tmp_path / "shd.toml")
        service = MemoryService()
        store = Store.open(cfg.paths.database)
        engine = Engine(cfg, store, models.backend(MemoryRemote(service), cfg.replicate),
                        token_provider=token_provider)
        rigs.append(Rig(tmp_path, service, store, engine))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.engine.stop()
        rig.store.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    r = make_rig()
    r.engine.start()
    return r


def seeds(predictions: list[Prediction]) -> list[int]:
    return [json.loads(p.input_json)["seed"] for p in predictions]


def test_each_frame_is_prompted_then_painted_with_one_paid_prediction_per_stage(rig: Rig) -> None:
    frames = rig.finished(rig.job("j1", 3))
    assert [f.state for f in frames] == ["generated"] * 3
    assert all(f.prompt and f.prompt.startswith("a painting of ") for f in frames)
    assert [f.seed for f in frames] == [100, 101, 102]  # replicate.seed + frame
    assert all(Path(f.image_path or "").read_bytes().startswith(b"\x89PNG") for f in frames)
    assert [p.status for p in rig.ledger("j1")] == ["succeeded"] * 6 and rig.service.creates == 6


def test_jobs_take_turns_so_a_short_one_is_not_stuck_behind_a_long_one(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(concurrency=1)
    rig.job("long", 8)
    rig.job("short", 1)
    rig.engine.start()
    rig.finished("long")
    order = [(p.job_id, p.stage) for p in sorted(rig.store.predictions(), key=lambda p: p.id)]
    assert order.index(("short", Stage.IMAGE)) < 6, order  # first in, first out would put it after 8 prompts


def test_a_create_whose_answer_was_lost_is_found_on_the_server_and_not_paid_again(rig: Rig) -> None:
    rig.service.lose_create_answers(times=1)
    (frame,) = rig.finished(rig.job("j1", 1))
    assert frame.state == "generated" and rig.service.creates == 2
    assert [p.status for p in rig.ledger("j1")] == ["succeeded", "succeeded"]


def test_429s_are_refused_retried_after_the_hint_and_never_use_up_the_attempts(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(max_attempts=1)
    rig.service.refuse_creates(RateLimited("rate limited (429)", 0.01), times=3)
    rig.engine.start()
    (frame,) = rig.finished(rig.job("j1", 1))
    assert frame.state == "generated" and rig.service.creates == 2
    assert [p.status for p in rig.ledger("j1")] == ["refused"] * 3 + ["succeeded"] * 2


def test_nsfw_is_painted_again_with_a_new_seed_until_model_retries_are_spent(rig: Rig) -> None:
    rig.service.fail_predictions(ModelFailed("NSFW content detected", retry_with_new_seed=True), times=1,
                                 model=config.SDXL)
    (frame,) = rig.finished(rig.job("once", 1))
    assert frame.state == "generated"
    assert seeds(rig.ledger("once", Stage.IMAGE)) == [100, 100 + 7919]

    rig.service.fail_predictions(ModelFailed("NSFW content detected", retry_with_new_seed=True), times=10,
                                 model=config.SDXL)
    (frame,) = rig.finished(rig.job("always", 1))
    assert frame.state == "failed" and frame.error == "NSFW content detected"
    assert seeds(rig.ledger("always", Stage.IMAGE)) == [100, 100 + 7919, 100 + 2 * 7919]  # model_retries = 2


def test_a_rejected_input_fails_only_its_own_frame_with_the_reason(rig: Rig) -> None:
    rig.service.refuse_creates(Rejected("the service rejected the input (422): width too large"), times=1)
    frames = rig.finished(rig.job("j1", 2))
    assert sorted(f.state for f in frames) == ["failed", "generated"]
    assert [f.error for f in frames if f.state == "failed"] == ["the service rejected the input (422): width too large"]


def test_transient_failures_are_retried_until_max_attempts_then_the_frame_fails(rig: Rig) -> None:
    rig.service.fail_predictions(Transient("Prediction interrupted; please retry (code: PA)"), times=10,
                                 model=config.SDXL)
    (frame,) = rig.finished(rig.job("j1", 1))
    assert frame.state == "failed"
    assert frame.error == "image failed after 3 attempts: Prediction interrupted; please retry (code: PA)"
    assert [p.status for p in rig.ledger("j1", Stage.IMAGE)] == ["failed"] * 3


def test_refused_credentials_pause_all_work_until_the_token_is_accepted(make_rig: Callable[..., Rig]) -> None:
    token = ["mem-token"]
    rig = make_rig(token_provider=lambda: token[0])
    rig.service.token = "r8_rotated"
    rig.engine.start()
    rig.job("j1", 1)
    wait_for("the pause", lambda: rig.engine.paused)
    assert not rig.engine.try_resume()  # the credential still holds the old token
    token[0] = "r8_rotated"
    assert rig.engine.try_resume() and rig.engine.paused is None
    (frame,) = rig.finished("j1")
    assert frame.state == "generated" and rig.service.creates == 2
    assert [p.status for p in rig.ledger("j1")] == ["succeeded", "succeeded"]  # the upload was refused: no create


def test_a_prediction_recorded_by_an_earlier_run_is_resumed_not_created_again(make_rig: Callable[..., Rig]) -> None:
    """By its recorded id; and one whose create was in flight without an id is looked up by its input."""
    rig = make_rig()
    rig.job("j1", 2)
    earlier = MemoryRemote(rig.service)
    prompter = models.Prompter(earlier, config.IMG2PROMPT)
    for idx, with_id in ((0, True), (1, False)):
        inp = prompter.input_for(Path(rig.store.frame("j1", idx).path))
        pred = rig.store.begin_prediction("j1", idx, Stage.PROMPT, model=config.IMG2PROMPT, input=inp, reason="first")
        status = earlier.create(config.IMG2PROMPT, inp)
        if with_id:
            rig.store.update_prediction(pred, status=status.status, remote_id=status.remote_id)
    rig.engine.start()
    rig.finished("j1")
    assert rig.service.creates == 4  # two prompts from the earlier run, two pictures
    assert [p.status for p in rig.ledger("j1", Stage.PROMPT)] == ["succeeded", "succeeded"]


def test_an_unreachable_api_spends_no_attempt_fails_no_frame_and_every_task_waits_for_it(
        make_rig: Callable[..., Rig]) -> None:
    """Connection refused for a while: the frames wait (no attempt spent even with max_attempts = 1), the engine
    says why, its retries back off together, and once the API answers every frame is painted, paid once."""
    rig = make_rig(max_attempts=1, backoff_base=0.01, backoff_max=0.08)
    rig.service.unreachable = True
    rig.engine.start()
    rig.job("j1", 3)
    wait_for("three failed tries in the outage", lambda: rig.engine.outage.tries >= 3)
    assert (rig.engine.paused or "").startswith("waiting for Replicate: unreachable since ")
    assert "ConnectError" in (rig.engine.paused or "")
    (held,) = rig.engine.paused_by()
    assert held.kind == "unreachable" and held.since is not None
    assert all(f.state == "extracted" for f in rig.store.frames("j1"))
    rig.service.unreachable = False
    frames = rig.finished("j1")
    assert [f.state for f in frames] == ["generated"] * 3 and rig.engine.paused is None
    assert rig.service.creates == 6
    assert all(p.status == "succeeded" for p in rig.ledger("j1"))  # nothing was shown as a paid attempt


def test_a_create_whose_answer_was_lost_stays_counted_when_the_look_up_cannot_connect(tmp_path: Path) -> None:
    """The create may have been paid for; the look-up that would tell cannot reach the server: the ledger keeps
    it `lost` (a paid attempt), never `refused` as a create that provably never reached the server."""

    class LookUpUnreachable(MemoryRemote):
        def find(self, ref: str, input: Any, created_after: float) -> Any:
            raise Transient("network error: ConnectError: refused", unreachable=True)

    cfg = config.from_mapping({"replicate": {**SETTINGS, "max_attempts": 1}}, tmp_path / "shd.toml")
    service = MemoryService()
    service.lose_create_answers(times=1)
    store = Store.open(cfg.paths.database)
    engine = Engine(cfg, store, models.backend(LookUpUnreachable(service), cfg.replicate))
    rig = Rig(tmp_path, service, store, engine)
    try:
        rig.job("j1", 1)
        engine.start()
        (frame,) = rig.finished("j1")
        assert frame.state == "failed" and "after 1 attempts" in (frame.error or "")
        assert [p.status for p in rig.ledger("j1")] == ["lost"]
    finally:
        engine.stop()
        store.close()

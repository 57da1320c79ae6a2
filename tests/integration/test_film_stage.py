"""The FILM stage over the in-memory backend: every guarantee the frames' stages have, for each pair of consecutive
paintings. Real store, real threads, a prediction service in this process (its FILM answers are real clips made by
ffmpeg) on a clock that moves only when told, so every cost is an exact figure and nothing waits for time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shd import config, jobs
from shd.backends import models
from shd.backends.memory import ManualClock, MemoryRemote, MemoryService, RealClock
from shd.errors import ModelFailed, Transient
from shd.scheduler import Engine, Task
from shd.states import FINISHED_PAIRS, FrameState, JobState, PairState, Stage
from shd.store import Pair, Store
from tests.e2e.harness import wait_for
from tests.integration.test_scheduler_bill import EACH, PER_SECOND, PRICES, RUN_S, SETTINGS, Rig, make_rig, rainbow
from tests.videos import frames_rgb, make_png

__all__ = ["make_rig"]  # the bill's rig, as a fixture here

FILM_REF = config.FILM.split(":")[0]
FILM = {"transition": "film", "times_to_interpolate": 2}   # 3 in-betweens a pair: 3 runs of the network
FILM_PRICE = {FILM_REF: {"per_second": PER_SECOND, "typical_seconds": RUN_S}}


def film_rig(make_rig: Callable[..., Rig], **sections: Any) -> Rig:
    rig = make_rig(output={**FILM, **sections.pop("output", {})}, prices={**PRICES, **FILM_PRICE}, **sections)
    rig.service.set_latency(config.FILM, 0.0, RUN_S)  # per run of FILM's network
    return rig


def settled(rig: Rig, job_id: str, pairs: int, timeout: float = 30.0) -> list[Pair]:
    """Wait (on the engine's frame_done) until the job has `pairs` pairs, each interpolated or failed."""
    def done() -> list[Pair] | None:
        got = rig.store.pairs(job_id)
        return got if len(got) == pairs and all(p.state in FINISHED_PAIRS for p in got) else None

    with rig.engine.frame_done:
        if not rig.engine.frame_done.wait_for(done, timeout):
            raise AssertionError(f"job {job_id}: pairs {[(p.idx, p.state) for p in rig.store.pairs(job_id)]}")
    return done() or []


def add_frames(rig: Rig, job_id: str, colours: list[tuple[int, int, int]], first: int = 0) -> None:
    """Extract more frames of a running job (as extraction does, one by one) and hand them to the engine."""
    for i, rgb in enumerate(colours, start=first):
        path = make_png(rig.tmp / "jobs" / job_id / "frames" / f"{i:06d}.png", rgb, (8, 8))
        rig.store.add_frame(job_id, i, float(i), path)
        rig.engine.enqueue(Task(job_id, i, Stage.PROMPT))


def test_each_pair_of_paintings_is_one_paid_prediction_priced_and_kept_as_a_clip_of_the_two(
        make_rig: Callable[..., Rig]) -> None:
    """Three frames: two pairs, each one FILM prediction of the two paintings, uploaded under .png names, billed for
    its 2^k - 1 runs; the clip kept holds 2^k + 1 frames from the first painting to the second."""
    rig = film_rig(make_rig)
    frames = rig.finished(rig.job("j1", rainbow(3)))
    pairs = settled(rig, "j1", 2)
    assert [(p.idx, p.state) for p in pairs] == [(0, "interpolated"), (1, "interpolated")]
    film = rig.ledger("j1", "film")
    assert sorted((p.frame_idx, p.status, p.attempt) for p in film) == [(0, "succeeded", 1), (1, "succeeded", 1)]
    assert all(p.predict_time == 3 * RUN_S and p.cost_usd == pytest.approx(3 * EACH) for p in film)
    assert rig.service.creates == 3 * 2 + 2
    for p in film:
        assert p.input["times_to_interpolate"] == 2
        assert p.input["frame1"].endswith(f"-{p.frame_idx:06d}.png")       # mem://files/<n>-000000.png
        assert p.input["frame2"].endswith(f"-{p.frame_idx + 1:06d}.png")
    for pair in pairs:
        clip = Path(str(pair.clip_path))
        assert clip.suffix == ".mp4" and clip.parent == rig.tmp / "jobs" / "j1" / "film"
        got = frames_rgb(clip)
        ends = [frames_rgb(Path(str(frames[i].image_path)))[0] for i in (pair.idx, pair.idx + 1)]
        assert len(got) == 5 and max(abs(a - b) for a, b in zip(got[0], ends[0])) <= 12
        assert max(abs(a - b) for a, b in zip(got[-1], ends[1])) <= 12
    assert rig.store.job_cost("j1") == {"usd": pytest.approx(6 * EACH + 2 * 3 * EACH),
                                        "predict_seconds": 6 * RUN_S + 2 * 3 * RUN_S, "predictions": 8, "reused": 0,
                                        "saved_usd": 0.0}


def test_a_pair_starts_as_soon_as_both_its_paintings_exist(make_rig: Callable[..., Rig]) -> None:
    """Frames 0 and 1 extracted and painted: their pair is interpolated while frame 2 is not even extracted."""
    rig = film_rig(make_rig)
    rig.job("j1", [])
    add_frames(rig, "j1", rainbow(2))
    (pair,) = settled(rig, "j1", 1)
    assert pair.state == "interpolated" and len(rig.store.frames("j1")) == 2
    add_frames(rig, "j1", rainbow(3)[2:], first=2)
    assert [p.state for p in settled(rig, "j1", 2)] == ["interpolated"] * 2
    assert len(rig.ledger("j1", "film")) == 2


def test_with_one_interpolation_film_answers_a_png_midpoint(make_rig: Callable[..., Rig]) -> None:
    rig = film_rig(make_rig, output={"times_to_interpolate": 1})
    frames = rig.finished(rig.job("j1", rainbow(2)))
    (pair,) = settled(rig, "j1", 1)
    ends = [frames_rgb(Path(str(f.image_path)))[0] for f in frames]
    assert Path(str(pair.clip_path)).suffix == ".png"
    (mid,) = frames_rgb(Path(str(pair.clip_path)))
    assert all(abs(m - (a + b) / 2) <= 1 for m, a, b in zip(mid, *ends)) and ends[0] != ends[1]
    (film,) = rig.ledger("j1", "film")
    assert film.predict_time == RUN_S  # 2^1 - 1 run


def test_failures_follow_the_retry_policy_and_a_pair_that_finally_fails_is_recorded(
        make_rig: Callable[..., Rig]) -> None:
    """A transient failure is retried (both billed); a create whose answer was lost is found, not paid again; a
    model error fails the pair with its reason (the video crossfades that gap)."""
    rig = film_rig(make_rig)
    rig.service.fail_predictions(Transient("Prediction interrupted; please retry (code: PA)"), times=1,
                                 model=config.FILM)
    rig.service.lose_create_answers(times=1, model=config.FILM)
    rig.finished(rig.job("j1", rainbow(3)))
    pairs = settled(rig, "j1", 2)
    assert [p.state for p in pairs] == ["interpolated"] * 2
    film = rig.ledger("j1", "film")
    assert sorted(p.status for p in film) == ["failed", "succeeded", "succeeded"]
    assert rig.service.creates == 6 + 3  # the lost answer's prediction was found, not created again

    rig.service.fail_predictions(ModelFailed("model error: shapes do not match"), times=1, model=config.FILM)
    rig.finished(rig.job("j2", rainbow(2)))
    (pair,) = settled(rig, "j2", 1)
    assert pair.state == "failed" and pair.error == "model error: shapes do not match"
    assert [p.status for p in rig.ledger("j2", "film")] == ["failed"]


def test_a_pair_gets_max_attempts_paid_tries_then_fails(make_rig: Callable[..., Rig]) -> None:
    rig = film_rig(make_rig, replicate={"max_attempts": 2})
    rig.service.fail_predictions(Transient("Prediction interrupted; please retry (code: PA)"), times=5,
                                 model=config.FILM)
    rig.finished(rig.job("j1", rainbow(2)))
    (pair,) = settled(rig, "j1", 1)
    assert pair.state == "failed" and pair.error.startswith("film failed after 2 attempts")
    assert rig.service.creates == 4 + 2


def test_the_budget_counts_each_pair_and_holds_them_at_a_cap(make_rig: Callable[..., Rig]) -> None:
    """$0.02 a prompt or painting, $0.06 a pair (three runs): a $0.13 day pays the four frames' stages of two
    frames, then holds the pair (in flight counted at its expected $0.06), never failing it; a raise finishes it."""
    rig = film_rig(make_rig, budget={"daily_usd": 0.13})
    rig.finished(rig.job("j1", rainbow(2)))
    held = wait_for("the job held", lambda: rig.store.job("j1").held)
    assert held.startswith("daily budget $0.13 reached") and rig.ledger("j1", "film") == []
    assert rig.store.pair("j1", 0).state == PairState.PAINTED
    rig.reload(budget={"daily_usd": 1.0})
    (pair,) = settled(rig, "j1", 1)
    assert pair.state == "interpolated" and rig.store.job("j1").held is None
    assert rig.store.spent_since(0.0) == pytest.approx(4 * EACH + 3 * EACH)


def test_an_identical_pair_is_paid_once(make_rig: Callable[..., Rig]) -> None:
    """Identical frames painted once (reuse = "all"): three identical pairs, one FILM prediction, two reused; the
    same video again pays for nothing at all."""
    rig = film_rig(make_rig, replicate={"reuse": "all"})
    rig.finished(rig.job("still", [(90, 90, 90)] * 4))
    assert [p.state for p in settled(rig, "still", 3)] == ["interpolated"] * 3
    film = rig.ledger("still", "film")
    paid = [p for p in film if p.status == "succeeded"]
    assert len(paid) == 1 and sorted(p.status for p in film) == ["reused", "reused", "succeeded"]
    assert all(p.saved_usd == pytest.approx(3 * EACH) for p in film if p.status == "reused")
    creates = rig.service.creates
    rig.finished(rig.job("again", [(90, 90, 90)] * 4))
    settled(rig, "again", 3)
    assert rig.service.creates == creates and {p.status for p in rig.ledger("again")} == {"reused"}
    clips = [Path(str(p.clip_path)) for p in rig.store.pairs("again")]
    assert all(c.parent == rig.tmp / "jobs" / "again" / "film" and c.is_file() for c in clips)


def test_a_restart_resumes_the_recorded_pairs_without_paying_again(tmp_path: Path) -> None:
    """The engine stops (a crash) with FILM predictions in flight; a new engine on the same store and service polls
    them instead of creating them again."""
    clock = ManualClock()
    service = MemoryService(clock=clock, latency={config.FILM: (0.0, 10.0)})
    cfg = config.from_mapping({"replicate": {**SETTINGS, "seed": 1}, "output": FILM}, tmp_path / "shd.toml")
    store = Store.open(cfg.paths.database)

    def engine() -> Engine:
        e = Engine(cfg, store, models.backend(MemoryRemote(service, create_wait=0), cfg.replicate))
        e.start()
        return e

    rig = Rig(tmp_path, service, store, engine())
    try:
        rig.finished(rig.job("j1", rainbow(3)))
        wait_for("both pairs in flight", lambda: len(store.predictions("j1", live=True)) == 2
                 and all(p.remote_id for p in store.predictions("j1", live=True)))
        rig.engine.stop()
        assert service.creates == 8
        rig.engine = engine()
        for i in (0, 1):
            rig.engine.enqueue(Task("j1", i, Stage.FILM))  # what the pipeline offers after a restart
        clock.advance(60.0)
        assert [p.state for p in settled(rig, "j1", 2)] == ["interpolated"] * 2
        assert service.creates == 8 and len(rig.ledger("j1", "film")) == 2
    finally:
        rig.engine.stop()
        store.close()


def test_cancel_stops_the_pairs_in_flight_on_the_service(make_rig: Callable[..., Rig]) -> None:
    rig = film_rig(make_rig, clock=RealClock(), create_wait=0)
    rig.service.set_latency(config.FILM, 0.0, 60.0)
    rig.finished(rig.job("j1", rainbow(2)))
    (live,) = wait_for("the pair in flight", lambda: [p for p in rig.store.predictions("j1", live=True)
                                                      if p.remote_id])
    remote = MemoryRemote(rig.service)
    job, canceled = jobs.cancel(rig.store, remote, "j1")
    # The command cancels it, or the engine's own poll, seeing the job canceled, has just done so: either way once.
    assert job.state == JobState.CANCELED and canceled in (0, 1)
    wait_for("canceled on the service and in the ledger", lambda: remote.get(str(live.remote_id)).status ==
             "canceled" and rig.store.prediction(live.id).status == "canceled")
    assert rig.service.creates == 5  # 2 prompts, 2 paintings, 1 pair: nothing created again


def test_the_pairs_share_the_slots_with_the_frames(make_rig: Callable[..., Rig]) -> None:
    """At concurrency 1, no two predictions of any stage are ever in flight together."""
    rig = film_rig(make_rig, clock=RealClock(), create_wait=0, replicate={"concurrency": 1})
    for model in (config.IMG2PROMPT, config.SDXL, config.FILM):
        rig.service.set_latency(model, 0.0, 0.005)
    rig.finished(rig.job("j1", rainbow(4)))
    settled(rig, "j1", 3)
    spans = sorted((created, ended) for _, created, ended in rig.service.spans())
    assert len(spans) == 11 and all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert {model for model, _, _ in rig.service.spans()} == {"methexis-inc/img2prompt", "stability-ai/sdxl",
                                                             FILM_REF}


def test_shd_retry_interpolates_a_failed_pair_again(make_rig: Callable[..., Rig]) -> None:
    rig = film_rig(make_rig)
    rig.service.fail_predictions(ModelFailed("model error: shapes do not match"), times=1, model=config.FILM)
    rig.finished(rig.job("j1", rainbow(2)))
    settled(rig, "j1", 1)
    rig.store.transition_job("j1", JobState.FAILED, error="for the test: a job that failed")
    jobs.retry(config.from_mapping({}, rig.tmp / "shd.toml"), rig.store, "j1")
    assert rig.store.pair("j1", 0).state == PairState.PAINTED and rig.store.pair("j1", 0).error is None
    rig.store.transition_job("j1", JobState.EXTRACTING)
    rig.store.transition_job("j1", JobState.RUNNING)
    rig.engine.enqueue(Task("j1", 0, Stage.FILM))
    (pair,) = settled(rig, "j1", 1)
    assert pair.state == "interpolated" and [p.status for p in rig.ledger("j1", "film")] == ["failed", "succeeded"]
    assert all(f.state == FrameState.GENERATED for f in rig.store.frames("j1"))


def test_an_unreachable_api_holds_the_pairs_without_spending_their_attempts(tmp_path: Path) -> None:
    """FILM's creates cannot connect (the prompts' and paintings' can): the pairs wait at the shared outage gate,
    none fails even with max_attempts = 1 (the ledger says refused, not paid), and once the API answers each pair is
    paid once."""

    class FilmUnreachable(MemoryRemote):
        down = True

        def create(self, ref: str, input: Any) -> Any:
            if self.down and ref == config.FILM:
                raise Transient("network error: ConnectError: refused", unreachable=True)
            return super().create(ref, input)

    cfg = config.from_mapping({"replicate": {**SETTINGS, "max_attempts": 1, "backoff_base": 0.01,
                                             "backoff_max": 0.05}, "output": FILM}, tmp_path / "shd.toml")
    service = MemoryService()
    remote = FilmUnreachable(service)
    store = Store.open(cfg.paths.database)
    rig = Rig(tmp_path, service, store, Engine(cfg, store, models.backend(remote, cfg.replicate)))
    try:
        rig.engine.start()
        assert [f.state for f in rig.finished(rig.job("j1", rainbow(3)))] == ["generated"] * 3
        wait_for("the pairs refused in the outage", lambda: len(rig.ledger("j1", "film")) >= 3)
        assert {p.status for p in rig.ledger("j1", "film")} <= {"refused", "creating"}  # one may be trying now
        assert all(p.state != PairState.FAILED for p in store.pairs("j1"))
        remote.down = False
        assert [p.state for p in settled(rig, "j1", 2)] == ["interpolated"] * 2
        assert sorted(p.status for p in rig.ledger("j1", "film") if p.status != "refused") == ["succeeded"] * 2
        assert service.creates == 8
    finally:
        rig.engine.stop()
        store.close()

"""The bill, over the in-memory backend: every finished prediction priced in the ledger, the budget checked before
every create (held, never failed; resumed by a raise and a reload, or by the next day), and paid results reused by
content instead of paid again. Real store, real threads, a prediction service in this process whose predictions
run for exact, known times on a clock that moves only when told (so a cost is an exact figure and no test waits)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from shd import budget, config, status
from shd.backends import models
from shd.backends.memory import Clock, ManualClock, MemoryRemote, MemoryService, RealClock
from shd.errors import Transient
from shd.scheduler import Engine, Task
from shd.states import JobState, Stage
from shd.store import Prediction, Store
from tests.e2e.harness import wait_for
from tests.integration import test_scheduler as scheduler_rig
from tests.videos import make_png

RUN_S = 2.0          # every prediction runs (and is billed for) exactly this long
PER_SECOND = 0.01    # dollars: each prediction costs $0.02, and is expected to (typical_seconds = RUN_S)
EACH = RUN_S * PER_SECOND
PRICES = {m: {"per_second": PER_SECOND, "typical_seconds": RUN_S} for m in ("methexis-inc/img2prompt",
                                                                          "stability-ai/sdxl")}
SETTINGS = {"concurrency": 4, "poll_interval": 0.01, "backoff_base": 0.01, "backoff_max": 0.05,
            "creations_per_minute": 6000, "auth_recheck": 3600, "image_input": {"width": 8, "height": 8}}


@dataclass
class Rig(scheduler_rig.Rig):
    """test_scheduler's rig, whose frames have the colours asked for, and whose config can be reloaded."""

    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def job(self, job_id: str, colours: list[tuple[int, int, int]], *,
            estimate: float | None = None) -> str:
        """A running job with one extracted frame per colour, handed to the engine."""
        work = self.tmp / "jobs" / job_id
        self.store.create_job(job_id, source_name=f"{job_id}.mp4", origin_path=work / "src.mp4", source_path=None,
                              work_dir=work, mode="process", fps=1.0)
        self.store.transition_job(job_id, JobState.EXTRACTING)
        if estimate is not None:
            self.store.update_job(job_id, estimate_usd=estimate)
        self.store.transition_job(job_id, JobState.RUNNING)
        for i, rgb in enumerate(colours):
            path = make_png(work / "frames" / f"{i:06d}.png", rgb, (8, 8))
            self.store.add_frame(job_id, i, float(i), path)
            self.engine.enqueue(Task(job_id, i, Stage.PROMPT))
        return job_id

    def ledger(self, job_id: str | None = None, stage: str | None = None) -> list[Prediction]:
        return [p for p in self.store.predictions(job_id) if stage is None or p.stage == stage]

    def creates(self, model: str | None = None) -> int:
        return sum(1 for p in self.ledger() if p.status not in ("refused", "reused")
                   and (model is None or p.model.startswith(model)))

    def reload(self, **sections: dict[str, Any]) -> None:
        """Reload the engine with these sections changed, as SIGHUP does."""
        for name, values in sections.items():
            self.overrides.setdefault(name, {}).update(values)
        self.engine.reload(config.from_mapping(self.overrides, self.tmp / "shd.toml"))


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(*, wall: Callable[[], float] | None = None, clock: Clock | None = None, create_wait: float = 3600,
             **sections: dict[str, Any]) -> Rig:
        """Predictions run on `clock` (a ManualClock unless given). By default a create waits for its prediction to
        end (on the manual clock, at once), so none is left in flight; with `create_wait=0` they are polled, and
        stay in flight until the clock is moved."""
        overrides = copy.deepcopy({"prices": PRICES, **sections})
        overrides["replicate"] = {**SETTINGS, **sections.get("replicate", {})}
        cfg = config.from_mapping(overrides, tmp_path / "shd.toml")
        service = MemoryService(clock=clock or ManualClock(),
                                latency={"methexis-inc/img2prompt": (0.0, RUN_S), "stability-ai/sdxl": (0.0, RUN_S)})
        store = Store.open(cfg.paths.database)
        extra = {"wall": wall} if wall else {}
        remote = MemoryRemote(service, create_wait=create_wait)
        engine = Engine(cfg, store, models.backend(remote, cfg.replicate), **extra)
        rigs.append(Rig(tmp_path, service, store, engine, overrides))
        engine.start()
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.engine.stop()
        rig.store.close()


GREY = (128, 128, 128)


def rainbow(n: int) -> list[tuple[int, int, int]]:
    return [(20 * i, 200 - 10 * i, 7) for i in range(n)]


def test_a_timeout_whose_cancel_fails_resumes_the_same_prediction_and_pays_for_no_second_one(
        make_rig: Callable[..., Rig]) -> None:
    """Past prediction_timeout the cancel is lost: the prediction runs on (billed), so it is not recorded canceled
    and nothing is created beside it; it is resumed, and canceled for real at its next deadline."""
    rig = make_rig(clock=RealClock(), create_wait=0, replicate={"prediction_timeout": 0.2, "max_attempts": 1})
    rig.service.set_latency(config.IMG2PROMPT, 0.0, 60.0)
    rig.service.fail_cancels(Transient("network error: ReadTimeout"), times=1)
    (frame,) = rig.finished(rig.job("slow", [GREY]))
    assert frame.state == "failed" and frame.error == "prompt failed after 1 attempts: timed out; canceled"
    (canceled,) = rig.ledger("slow")
    assert canceled.status == "canceled" and rig.service.creates == 1
    ((_, created, ended),) = rig.service.spans()
    assert ended - created < 30  # what the ledger says canceled was canceled on the server, not left to run 60 s


# --- spend, recorded -------------------------------------------------------------------------------------------


def test_every_finished_prediction_is_priced_in_the_ledger_and_a_failed_one_is_billed_too(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.service.fail_predictions(Transient("Prediction interrupted; please retry (code: PA)"), times=1,
                                 model=config.SDXL)
    frames = rig.finished(rig.job("j1", rainbow(2)))
    assert [f.state for f in frames] == ["generated"] * 2
    paid = rig.ledger("j1")
    assert sorted(p.status for p in paid) == ["failed"] + ["succeeded"] * 4
    assert all(p.predict_time == RUN_S and p.cost_usd == pytest.approx(EACH) for p in paid)
    assert rig.store.job_cost("j1") == {"usd": pytest.approx(5 * EACH), "predict_seconds": 5 * RUN_S,
                                        "predictions": 5, "reused": 0, "saved_usd": 0.0}
    assert rig.store.spent_since(0.0) == pytest.approx(5 * EACH)


def test_a_prediction_shd_cancels_is_billed_for_the_time_it_ran(make_rig: Callable[..., Rig]) -> None:
    """Past replicate.prediction_timeout shd cancels it, then reads it once more: its predict_time is priced."""
    rig = make_rig(clock=RealClock(), create_wait=0, replicate={"prediction_timeout": 0.2, "max_attempts": 1})
    rig.service.set_latency(config.IMG2PROMPT, 0.0, 60.0)
    (frame,) = rig.finished(rig.job("slow", [GREY]))
    assert frame.state == "failed" and frame.error == "prompt failed after 1 attempts: timed out; canceled"
    (canceled,) = rig.ledger("slow")
    assert canceled.status == "canceled" and canceled.error == "timed out; canceled"
    assert canceled.predict_time is not None and 0.2 <= canceled.predict_time < 60
    assert canceled.cost_usd == pytest.approx(canceled.predict_time * PER_SECOND)
    assert rig.store.job_cost("slow")["usd"] == pytest.approx(canceled.cost_usd, abs=1e-6)


def test_a_price_change_applies_to_predictions_that_finish_after_the_reload(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.finished(rig.job("before", rainbow(1)))
    rig.reload(prices={"stability-ai/sdxl": {"per_second": 0.5}})
    rig.finished(rig.job("after", [GREY]))
    costs = {(p.job_id, p.stage): p.cost_usd for p in rig.ledger()}
    assert costs[("before", "image")] == pytest.approx(EACH) and costs[("after", "image")] == pytest.approx(1.0)
    assert costs[("after", "prompt")] == pytest.approx(EACH)


# --- caps ------------------------------------------------------------------------------------------------------


def test_the_daily_cap_stops_creations_holds_the_job_and_a_raise_and_reload_resume_it_without_paying_twice(
        make_rig: Callable[..., Rig]) -> None:
    """Cap $0.09 at $0.02 a prediction: four creations (in flight counted at their expected cost), then the job is
    held, not failed, its frames kept; raised and reloaded, it finishes with one paid prediction per frame and
    stage, no more."""
    rig = make_rig(budget={"daily_usd": 0.09})
    with capture_logs() as logs:
        rig.job("j1", rainbow(5))
        held = wait_for("the job held", lambda: rig.store.job("j1").held)
        wait_for("what was in flight finished", lambda: not rig.store.predictions("j1", live=True))
    assert held == "daily budget $0.09 reached; resumes at 00:00 UTC, or raise budget.daily_usd and reload"
    assert rig.creates() == 4 and rig.store.spent_since(0.0) == pytest.approx(4 * EACH)  # <= cap
    assert rig.store.job("j1").state == "running"
    assert all(f.state != "failed" for f in rig.store.frames("j1")) and len(rig.store.frames("j1")) == 5
    reached = [e for e in logs if e["event"] == "budget_reached"]
    assert len(reached) == 1 and reached[0]["log_level"] == "error" and reached[0]["reason"] == held
    warned = [e for e in logs if e["event"] == "budget_warning"]
    assert [w["message"] for w in warned] == ["daily budget 89% used: $0.08 of $0.09 (spent and in flight)"]
    # One of the engine's holds: its reason is the daemon's (status, STATUS=, the page, the hook), never an outage.
    (hold,) = rig.engine.paused_by()
    assert hold.kind == "budget" and hold.reason == held == rig.engine.paused and hold.since is not None
    assert rig.engine.outage.since is None

    rig.reload(budget={"daily_usd": 1.0})
    frames = rig.finished("j1")
    assert [f.state for f in frames] == ["generated"] * 5
    assert rig.creates() == 10 and rig.service.creates == 10  # nothing paid twice
    assert sorted((p.frame_idx, p.stage) for p in rig.ledger()) == sorted(
        (i, s) for i in range(5) for s in ("prompt", "image"))
    assert rig.store.job("j1").held is None and rig.engine.paused is None and rig.engine.paused_by() == []


def test_overshoot_is_bounded_by_what_was_in_flight(make_rig: Callable[..., Rig]) -> None:
    """Four prompts in flight at their expected $0.02 fill a $0.09 day; they run three times as long as expected,
    finish and are counted: spend passes the cap by no more than what was in flight, and nothing more starts."""
    rig = make_rig(create_wait=0, budget={"daily_usd": 0.09}, replicate={"concurrency": 5})  # a fifth asks
    rig.service.set_latency(config.IMG2PROMPT, 0.0, 3 * RUN_S)
    rig.job("j1", rainbow(8))
    wait_for("the job held", lambda: rig.store.job("j1").held)
    assert len(rig.store.predictions("j1", live=True)) == 4
    rig.service.clock.advance(3 * RUN_S)  # they finish
    wait_for("what was in flight finished", lambda: not rig.store.predictions("j1", live=True))
    assert rig.creates() == 4 and rig.store.spent_since(0.0) == pytest.approx(4 * 3 * EACH)  # 0.24
    assert rig.store.spent_since(0.0) <= 0.09 + 4 * 3 * EACH


def test_a_daily_hold_lifts_by_itself_when_the_day_ends(make_rig: Callable[..., Rig]) -> None:
    """The budget's clock reads one second before the coming midnight (the ledger's own times stay real)."""
    clock = [budget.next_day(time.time(), timezone.utc) - 1.0]
    rig = make_rig(wall=lambda: clock[0], budget={"daily_usd": 0.05})
    rig.job("j1", rainbow(2))
    wait_for("the job held", lambda: rig.store.job("j1").held)
    assert rig.creates() == 2
    clock[0] += 2.0   # past midnight: a new day's budget; the held tasks look again when the day begins
    assert [f.state for f in rig.finished("j1")] == ["generated"] * 2
    assert rig.creates() == 4


def test_a_monthly_cap_names_the_day_it_resumes(make_rig: Callable[..., Rig]) -> None:
    clock = [datetime(2026, 12, 20, 12, 0, tzinfo=timezone.utc).timestamp()]
    rig = make_rig(wall=lambda: clock[0], budget={"monthly_usd": 0.01, "timezone": "Europe/Berlin"})
    rig.job("j1", rainbow(1))
    held = wait_for("the job held", lambda: rig.store.job("j1").held)
    assert held == ("monthly budget $0.01 reached; resumes on 2027-01-01 00:00 Europe/Berlin, "
                    "or raise budget.monthly_usd and reload")
    assert rig.creates() == 0


def test_a_job_whose_estimate_alone_is_over_per_job_usd_is_held_before_its_first_paid_call(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(budget={"per_job_usd": 0.10})
    rig.job("big", rainbow(3), estimate=0.12)
    held = wait_for("the job held", lambda: rig.store.job("big").held)
    assert held == "job estimated at $0.12, over budget.per_job_usd $0.10; raise budget.per_job_usd and reload"
    assert rig.creates() == 0
    rig.reload(budget={"per_job_usd": 0.5})
    rig.finished("big")
    assert rig.creates() == 6


def test_the_per_job_cap_holds_only_that_job(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(budget={"per_job_usd": 0.05})
    rig.job("long", rainbow(4))
    wait_for("the long job held", lambda: rig.store.job("long").held)
    assert rig.store.job_cost("long")["usd"] <= 0.05
    assert [f.state for f in rig.finished(rig.job("short", [GREY]))] == ["generated"]
    assert rig.store.job("short").held is None and rig.store.job("long").held.startswith("job budget $0.05 reached")


def test_a_hold_ends_with_its_job_and_is_said_again_when_the_retried_job_is_held_again(
        make_rig: Callable[..., Rig]) -> None:
    """A held job canceled, then retried: neither the canceled nor the queued job says it is held (a `shd process`
    following it would end at once with exit 8 for a hold that was not checked again); held again once it runs,
    it says so again."""
    from shd import jobs

    rig = make_rig(budget={"per_job_usd": 0.10})
    rig.job("big", rainbow(2), estimate=0.12)
    wait_for("the job held", lambda: rig.store.job("big").held)
    jobs.cancel(rig.store, None, "big")
    assert rig.store.job("big").held is None
    jobs.retry(rig.engine.cfg, rig.store, "big")
    assert rig.store.job("big").state == "queued" and rig.store.job("big").held is None
    rig.store.transition_job("big", JobState.EXTRACTING)
    rig.store.transition_job("big", JobState.RUNNING)
    for i in range(2):
        rig.engine.enqueue(Task("big", i, Stage.PROMPT))
    assert wait_for("held again", lambda: rig.store.job("big").held).startswith("job estimated at $0.12")
    assert rig.creates() == 0


# --- reuse -----------------------------------------------------------------------------------------------------


def test_identical_frames_in_one_video_make_one_prompt_creation(make_rig: Callable[..., Rig]) -> None:
    """Six identical frames handed out four at a time: one prompt is paid, the others wait for it and take it."""
    rig = make_rig()
    frames = rig.finished(rig.job("black", [GREY] * 6))
    assert [f.state for f in frames] == ["generated"] * 6 and len({f.prompt for f in frames}) == 1
    prompts = rig.ledger("black", "prompt")
    paid = [p for p in prompts if p.status == "succeeded"]
    assert len(paid) == 1 and rig.creates(config.IMG2PROMPT.split(":")[0]) == 1
    reused = [p for p in prompts if p.status == "reused"]
    assert len(reused) == 5 and {p.reused_from for p in reused} == {paid[0].id}
    assert all(p.cost_usd == 0 and p.saved_usd == pytest.approx(EACH) and p.remote_id is None for p in reused)
    assert rig.store.job_cost("black")["reused"] == 5 and rig.store.job_cost("black")["saved_usd"] == \
        pytest.approx(5 * EACH)
    assert rig.creates(config.SDXL.split(":")[0]) == 6  # random seeds: each frame gets a painting of its own


def test_with_reuse_all_identical_frames_share_one_painting_too(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(replicate={"reuse": "all"})
    frames = rig.finished(rig.job("black", [GREY] * 4))
    assert rig.creates() == 2
    assert len({Path(f.image_path or "").read_bytes() for f in frames}) == 1 and len({f.seed for f in frames}) == 1


def test_the_same_frames_again_cost_no_prompt_and_with_a_fixed_seed_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(replicate={"seed": 7})
    first = rig.finished(rig.job("first", rainbow(3)))
    assert rig.creates() == 6
    again = rig.finished(rig.job("again", rainbow(3)))
    assert rig.creates() == 6  # nothing new was paid for
    assert [f.prompt for f in again] == [f.prompt for f in first] and [f.seed for f in again] == [7, 8, 9]
    assert [Path(f.image_path or "").read_bytes() for f in again] == [Path(f.image_path or "").read_bytes()
                                                                     for f in first]
    assert {p.status for p in rig.ledger("again")} == {"reused"}
    # `shd status JOB`: a reuse is neither a paid create nor a refused one.
    paid = status.job_detail(rig.store, rig.store.job("again"))["predictions"]
    assert paid["by_status"] == {} and paid["reused"] == 6 and paid["refused"] == 0

    del rig.overrides["replicate"]["seed"]
    rig.reload()  # random seeds: the prompts are reused, new paintings are paid for
    rig.finished(rig.job("random", rainbow(3)))
    assert rig.creates(config.IMG2PROMPT.split(":")[0]) == 3 and rig.creates(config.SDXL.split(":")[0]) == 6


def test_reuse_none_pays_for_everything(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(replicate={"reuse": "none", "seed": 7})
    rig.finished(rig.job("a", [GREY] * 2))
    rig.finished(rig.job("b", [GREY] * 2))
    assert rig.creates() == 8 and not [p for p in rig.ledger() if p.status == "reused"]
    assert all(p.reuse_key for p in rig.ledger())  # keys are recorded anyway, for a mode switched on later


def test_a_reused_result_passes_a_budget_that_holds_paid_work(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(replicate={"seed": 7})
    rig.finished(rig.job("paid", rainbow(2)))
    rig.reload(budget={"daily_usd": 0.01})  # less than one more prediction
    frames = rig.finished(rig.job("again", rainbow(2)))
    assert [f.state for f in frames] == ["generated"] * 2 and rig.creates() == 4
    assert rig.store.job("again").held is None


def test_reused_rows_never_count_as_paid_attempts(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(replicate={"max_attempts": 1})
    rig.finished(rig.job("a", [GREY]))
    frames = rig.finished(rig.job("b", [GREY]))
    assert frames[0].state == "generated"
    assert json.loads(rig.ledger("b", "prompt")[0].input_json) == json.loads(rig.ledger("a", "prompt")[0].input_json)


def test_a_prediction_left_in_flight_by_a_job_nobody_works_on_is_not_waited_for(
        make_rig: Callable[..., Rig]) -> None:
    """A job interrupted with a prompt in flight (its `shd process` Ctrl-C'd or killed, its daemon gone) stays
    recorded with the prediction live, and nobody here will resume it. Another job whose frame has the same key
    does not wait for it for ever (`shd process` on a trimmed copy hung): it pays for its own. A job that is being
    worked on is still waited for (test_identical_frames_in_one_video_make_one_prompt_creation)."""
    rig = make_rig()
    work = rig.tmp / "jobs" / "left"
    rig.store.create_job("left", source_name="left.mp4", origin_path=work / "src.mp4", source_path=None,
                         work_dir=work, mode="process", fps=1.0)
    rig.store.transition_job("left", JobState.EXTRACTING)
    rig.store.transition_job("left", JobState.RUNNING)
    rig.store.add_frame("left", 0, 0.0, make_png(work / "frames" / "000000.png", GREY, (8, 8)))
    prompt = rig.engine.runner.stages[Stage.PROMPT]
    lookup = prompt.lookup(rig.store.job("left"), rig.store.frame("left", 0), None)
    rig.store.begin_prediction("left", 0, Stage.PROMPT, model=prompt.ref, input={"image": "gone"}, reason="first",
                               reuse_key=lookup.key)  # its create never answered: the process was killed
    frames = rig.finished(rig.job("b", [GREY]), timeout=10.0)
    assert [f.state for f in frames] == ["generated"]
    assert [p.status for p in rig.ledger("b", "prompt")] == ["succeeded"]
    assert [p.status for p in rig.ledger("left")] == ["creating"]  # left for whoever resumes that job

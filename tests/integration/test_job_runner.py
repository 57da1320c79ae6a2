"""The job runner end to end in one process: real ffmpeg, a real store, the in-memory prediction service (no HTTP),
so what happens between painting, stitching, publishing and the user's commands (cancel, retry) is checked
deterministically, at the exact step it matters, in a few seconds."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shd import app as app_mod
from shd import config, identity, jobs, outputs, publish
from shd.backends import models
from shd.backends.memory import MemoryRemote, MemoryService
from shd.errors import InputError, ModelFailed
from shd.pipeline import runner
from shd.states import JobState
from shd.store import Store
from tests.videos import make_video

SIDECARS = (".prompts.csv", ".srt", ".vtt", ".sheet.png")
NSFW = "NSFW content detected. Try running it again, or try a different prompt."


class Rig:
    def __init__(self, tmp: Path, **sections: dict[str, Any]):
        self.tmp = tmp
        mapping: dict[str, Any] = {
            "paths": {"inbox": str(tmp / "inbox"), "outbox": str(tmp / "outbox"), "state_dir": str(tmp / "state")},
            "pipeline": {"audio": "none"},
            "replicate": {"concurrency": 2, "poll_interval": 0.01, "backoff_base": 0.01, "backoff_max": 0.05,
                          "model_retries": 0, "image_input": {"width": 64, "height": 48}},
        }
        for name, values in sections.items():
            mapping.setdefault(name, {}).update(values)
        self.cfg = config.from_mapping(mapping, tmp / "shd.toml")
        self.service = MemoryService()
        self.app = app_mod.build(self.cfg, backend=models.backend(MemoryRemote(self.service), self.cfg.replicate))

    def process(self, name: str, seconds: float = 2.0) -> str:
        """A `shd process` job of a new clip `name` (published to the outbox), run to its end; returns its id."""
        src = make_video(self.tmp / "sources" / name, seconds=seconds, size=(64, 48), audio=False)
        job = app_mod.create_process_job(self.cfg, self.app.store, src, None)
        self.app.runner.run_job(job.id)
        return job.id

    def outbox(self) -> list[str]:
        folder = self.cfg.paths.outbox
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**sections: dict[str, Any]) -> Rig:
        made.append(Rig(tmp_path, **sections))
        return made[-1]

    yield make
    for r in made:
        r.app.close()


def a_set(stem: str) -> list[str]:
    return sorted([stem + ".mp4", *(stem + s for s in SIDECARS)])


@pytest.mark.parametrize("when", ["stitching", "publishing"])
def test_a_job_canceled_while_it_stitches_publishes_nothing_and_its_retry_publishes_one_set(
        rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """`shd cancel` while the video is being stitched (or at the very instant it is published): the canceled job
    leaves nothing in the outbox, is not 'deferred' with an illegal transition, and its `shd retry` publishes
    one set under the first free stem (not `clip-2` beside an orphaned `clip`)."""
    r = rig()
    canceled: list[str] = []
    wrapped = {"stitching": (outputs, "make"), "publishing": (publish, "publish")}[when]
    real = getattr(*wrapped)

    def cancel_then(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        if not canceled:  # the user's `shd cancel`, from another process, at this moment
            (job,) = r.app.store.jobs((JobState.STITCHING,))
            canceled.append(jobs.cancel(r.app.store, None, job.id)[0].id)
        return out

    monkeypatch.setattr(*wrapped, cancel_then)
    job_id = r.process("clip.mp4")
    job = r.app.store.job(job_id)
    assert canceled == [job_id] and job.state == JobState.CANCELED and job.output is None
    assert r.outbox() == [] and job_id not in r.app.runner.deferred
    assert job.error == "canceled by the user"

    monkeypatch.setattr(*wrapped, real)
    jobs.retry(r.cfg, r.app.store, job_id)
    job = r.app.runner.run_job(job_id)
    assert job.state == JobState.DONE and job.output == str(r.cfg.paths.outbox / "clip.mp4")
    assert r.outbox() == a_set("clip")
    assert r.service.creates == 4  # nothing painted twice


def test_a_done_jobs_retry_never_replaces_another_jobs_video_that_took_its_name(rig: Callable[..., Rig]) -> None:
    """A done job with a failed frame published `clip.*`; the user took those files out of the outbox; a new
    `clip.mp4` was published under the free name. `shd retry` of the first job must not replace the second job's
    paid video and sidecars: it publishes under the next free stem and records that name."""
    r = rig()
    r.service.fail_predictions(ModelFailed(NSFW), times=1, model=config.SDXL)  # a frame of the first job fails
    first = r.process("clip.mp4")
    assert r.app.store.job(first).state == JobState.DONE and r.outbox() == a_set("clip")
    taken = r.tmp / "taken"
    taken.mkdir()
    for name in r.outbox():
        (r.cfg.paths.outbox / name).rename(taken / name)
    second = r.process("clip.mp4", seconds=3.0)
    assert r.app.store.job(second).output == str(r.cfg.paths.outbox / "clip.mp4")
    theirs = {name: (r.cfg.paths.outbox / name).read_bytes() for name in r.outbox()}

    jobs.retry(r.cfg, r.app.store, first)
    job = r.app.runner.run_job(first)
    assert job.state == JobState.DONE and r.app.store.frame_counts(first).get("failed", 0) == 0
    assert job.output == str(r.cfg.paths.outbox / "clip-2.mp4")
    assert {name: (r.cfg.paths.outbox / name).read_bytes() for name in a_set("clip")} == theirs  # untouched
    assert r.outbox() == sorted(a_set("clip") + a_set("clip-2"))


def test_a_reload_that_changes_the_model_keeps_the_running_models_price(
        rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch) -> None:
    """The models are kept until the next start (a reload says so), but the prices apply at once: a new file that
    prices only its new model left the running one unpriced, so its creates were expected at $0, passed every
    budget cap and were recorded at $0 until the restart. The running model keeps the price it had."""
    from shd import pricing, service
    from shd.notify import Notifier

    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test")
    painter, other = "acme/painter:" + "a" * 64, "acme/other:" + "b" * 64
    r = rig(replicate={"image_model": painter}, prices={"acme/painter": {"per_second": 0.01}},
            budget={"daily_usd": 5.0})
    path = r.tmp / "shd.toml"
    path.write_text(f'[replicate]\nimage_model = "{other}"\n[prices."acme/other"]\nper_second = 0.002\n'
                    f'[budget]\ndaily_usd = 5.0\n')
    d = service.Daemon(r.cfg, str(path), Notifier(None))
    d.app = r.app
    d.reload()
    assert d.cfg.replicate.image_model == painter  # kept until the next start
    assert d.cfg.budget.daily_usd == 5.0
    price = pricing.price_for(r.app.engine.cfg.prices, painter)
    assert price is not None and price.per_second == 0.01
    assert r.app.engine.budget.expected(painter) > 0


def test_a_resumed_process_jobs_video_is_hashed_again_only_once_it_was_touched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run of a `shd process` job after its first checks that its video is the one it started from; a deferred
    job is run again every 30 s, and hashing a long video each time would be work for nothing while it is untouched.
    Touched (edited in place), it is hashed again, and the change is found."""
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"the video the job started from")
    store = Store.open(tmp_path / "state" / "shd.db")
    store.create_job("j1", source_name="clip.mp4", origin_path=src, source_path=src, work_dir=tmp_path / "w",
                     mode="process", fps=1.0, source_sha256=identity.file_digest(src))
    job = store.job("j1")
    hashed: list[str] = []
    real = identity.file_digest
    monkeypatch.setattr(identity, "file_digest", lambda path: hashed.append(str(path)) or real(path))
    checked: dict[str, tuple[str, int, int]] = {}
    runner._same_source(job, checked)
    runner._same_source(job, checked)
    assert hashed == [str(src)]
    src.write_bytes(b"another video, of the same name")
    os.utime(src, ns=(1, 1))
    with pytest.raises(InputError, match="changed since its job started"):
        runner._same_source(job, checked)
    assert len(hashed) == 2

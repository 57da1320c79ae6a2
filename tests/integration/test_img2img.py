"""SDXL's size and img2img through the scheduler, over the in-memory backend (real store, real ffmpeg for the
fitted source picture): the painting follows the source's shape; with `image_from = "source"` the source frame,
fitted to that size, is uploaded and recorded with the create, and a create resumed from the ledger uploads nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shd import config, media, png
from shd.backends import models
from shd.backends.memory import MemoryRemote, MemoryService
from shd.scheduler import Engine, Task
from shd.states import Stage
from shd.store import Store
from tests.integration.test_scheduler import SETTINGS, Rig
from tests.videos import ffmpeg_exe

FF = ffmpeg_exe()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    settings = {**SETTINGS, "image_input": {}, "image_from": "source"}
    cfg = config.from_mapping({"replicate": settings, "pipeline": {"fit": "crop"}}, tmp_path / "shd.toml")
    service = MemoryService()
    store = Store.open(cfg.paths.database)
    engine = Engine(cfg, store, models.backend(MemoryRemote(service), cfg.replicate),
                    fit_picture=lambda src, dest, size, fit: media.fit_picture(FF, src, dest, size=size, fit=fit,
                                                                              timeout=60))
    r = Rig(tmp_path, service, store, engine)
    yield r
    engine.stop()
    store.close()


def _shown_at(rig: Rig, job_id: str, width: int, height: int) -> None:
    rig.store.update_job(job_id, width=width, height=height)


def test_img2img_paints_over_the_source_frame_fitted_to_the_paintings_size(rig: Rig) -> None:
    rig.job("j1", 2)
    _shown_at(rig, "j1", 192, 108)  # 16:9
    rig.engine.start()
    frames = rig.finished("j1")
    assert [f.state for f in frames] == ["generated"] * 2
    sent_for = {p.frame_idx: p.input for p in rig.ledger("j1", Stage.IMAGE)}
    for f in frames:
        sent = sent_for[f.idx]
        assert (sent["width"], sent["height"]) == (1344, 768) and sent["prompt_strength"] == 0.8
        uploaded = rig.service._file(sent["image"])  # what the model painted over
        assert png.size(uploaded) == (1344, 768)
        assert png.size(Path(f.image_path or "").read_bytes()) == (1344, 768)  # img2img paints at the image's size
        assert (Path(f.path).parent.parent / "img2img" / f"{f.idx:06d}-1344x768.png").read_bytes() == uploaded
    assert len(rig.service.uploads) == 4  # each frame once for its prompt, once for its painting


def test_a_recorded_img2img_create_is_resumed_by_its_input_and_nothing_is_uploaded_again(rig: Rig) -> None:
    """An earlier run uploaded frame 0's picture and sent the create, then died before the id was recorded: the
    next run finds that prediction by its recorded input (the upload's URL) instead of uploading and paying again."""
    rig.job("j1", 1)
    _shown_at(rig, "j1", 160, 120)
    frame = rig.store.frame("j1", 0)
    earlier = MemoryRemote(rig.service)
    described = earlier.create(config.IMG2PROMPT, {"image": earlier.upload(Path(frame.path))})
    prompt = models.Prompter(earlier, config.IMG2PROMPT).result(described)
    asked = rig.store.begin_prediction("j1", 0, Stage.PROMPT, model=config.IMG2PROMPT, input={}, reason="first")
    rig.store.update_prediction(asked, status="succeeded", remote_id=described.remote_id)
    rig.store.transition_frame("j1", 0, "prompted", prompt=prompt)
    painter = models.Painter(earlier, config.SDXL, rig.engine.cfg.replicate.image_input)
    inp = painter.input_for(prompt, 7, size=(1024, 768), image=Path(frame.path))
    rig.store.begin_prediction("j1", 0, Stage.IMAGE, model=config.SDXL, input=inp, reason="first", seed=7)
    earlier.create(config.SDXL, inp)
    uploads, creates = len(rig.service.uploads), rig.service.creates
    rig.engine.enqueue(Task("j1", 0, Stage.IMAGE))
    rig.engine.start()
    (done,) = rig.finished("j1")
    assert done.state == "generated"
    assert (len(rig.service.uploads), rig.service.creates) == (uploads, creates)
    (image_pred,) = rig.ledger("j1", Stage.IMAGE)
    assert image_pred.status == "succeeded" and json.loads(image_pred.input_json)["image"] == inp["image"]


def test_a_lost_create_answer_is_found_by_the_recorded_upload(rig: Rig) -> None:
    rig.service.lose_create_answers(times=1, model=config.SDXL)
    rig.job("j1", 1)
    _shown_at(rig, "j1", 160, 120)
    rig.engine.start()
    (frame,) = rig.finished("j1")
    assert frame.state == "generated" and rig.service.creates == 2  # the lost one was found, not paid again
    assert [p.status for p in rig.ledger("j1")] == ["succeeded", "succeeded"]
    assert len(rig.service.uploads) == 2  # and its picture was not uploaded again

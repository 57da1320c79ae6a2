"""The paid stages, each described once: the input it builds, the result it keeps, the ledger rows it owns.

A stage owns the ledger rows keyed (job, frame, its `Stage`) and moves its frame through `states.STAGE_STATES`:
before -> in flight (when its prediction is recorded) -> after (when its result is kept). The runner (runner.py)
drives every stage the same way: resume or create, poll, then `keep` the result.

- `PromptStage`: the frame's picture -> img2prompt -> the prompt, stored with the frame; queues the image stage.
- `ImageStage`: the prompt and the frame's seed -> SDXL -> the painted image, downloaded at once and written
  atomically into the job's `generated/` folder; the frame is done. It paints at the size that follows the source's
  shape (`shape.painting_for`) and, with `replicate.image_from = "source"`, over the source frame (img2img), fitted
  to that size first (`img2img/NNNNNN-WxH.png` in the job folder, made once by the `FitPicture` given) and uploaded
  with each create; a create resumed from the ledger uploads nothing (its recorded input is polled or looked up).
"""

from __future__ import annotations

import os
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shd import shape
from shd.backends.base import ImageToPrompt, PromptToImage, Status
from shd.config import Config
from shd.errors import BackendError, MediaError, Rejected, Transient
from shd.scheduler.dispatch import Task
from shd.states import FrameState, Stage
from shd.store import Frame, Job, Store

# (source frame, destination PNG, size, fit): writes the frame fitted to size as the destination, or raises
# MediaError (DiskFull when the disk is full). app.py gives media.fit_picture with the configured ffmpeg.
FitPicture = Callable[[Path, Path, tuple[int, int], str], None]


class PaidStage(ABC):
    """One paid step of a frame."""

    stage: Stage
    # The result is in the finished status itself (nothing to download): a create that comes back succeeded has its
    # ledger row written in the same transaction as the result (one commit less per frame).
    settles_with_result: bool = False
    finishes_frame: bool = False   # once kept, the frame is generated

    @property
    @abstractmethod
    def ref(self) -> str:
        """The model, 'owner/name:version'."""

    @abstractmethod
    def input_for(self, job: Job, frame: Frame, task: Task) -> tuple[dict[str, Any], int | None]:
        """The prediction input (may upload the frame) and the seed to record with it (None: no seed)."""

    @abstractmethod
    def keep(self, task: Task, job: Job, status: Status, record: Callable[[], object] | None, log: Any) -> list[Task]:
        """Keep the result of a succeeded prediction and move the frame on; returns the tasks that follow.
        `record` writes the prediction's ledger row when it is not written yet (to be done with the result)."""


class PromptStage(PaidStage):
    stage = Stage.PROMPT
    settles_with_result = True

    def __init__(self, store: Store, prompter: ImageToPrompt):
        self.store = store
        self.prompter = prompter

    @property
    def ref(self) -> str:
        return self.prompter.ref

    def input_for(self, job: Job, frame: Frame, task: Task) -> tuple[dict[str, Any], int | None]:
        return self.prompter.input_for(Path(frame.path)), None

    def keep(self, task: Task, job: Job, status: Status, record: Callable[[], object] | None, log: Any) -> list[Task]:
        try:
            prompt = self.prompter.result(status)
        except BackendError:
            if record is not None:
                record()
            raise
        with self.store.tx(durable=False):  # a prompt lost to a power cut is resumed from the ledger
            if record is not None:
                record()
            self.store.transition_frame(task.job_id, task.idx, FrameState.PROMPTED, prompt=prompt,
                                        expect=FrameState.PROMPTING, durable=False)
        log.info("frame_prompted", prompt=prompt[:120])
        return [Task(task.job_id, task.idx, Stage.IMAGE)]


class ImageStage(PaidStage):
    stage = Stage.IMAGE
    finishes_frame = True

    def __init__(self, store: Store, painter: PromptToImage, settings: Callable[[], Config],
                 fit_picture: FitPicture | None = None):
        self.store = store
        self.painter = painter
        self.settings = settings
        self.fit_picture = fit_picture  # None: img2img sends the source frame as extracted
        self._rng = random.Random()

    @property
    def ref(self) -> str:
        return self.painter.ref

    def input_for(self, job: Job, frame: Frame, task: Task) -> tuple[dict[str, Any], int | None]:
        assert frame.prompt is not None  # the frame is prompted: the state machine says so
        cfg = self.settings()
        seed = choose_seed(frame.seed, task, cfg.replicate.seed, self._rng)
        size = shape.painting_for(cfg.replicate.image_input, (job.width, job.height)) if job.width and job.height \
            else None
        image = self._source_picture(job, frame, size) if cfg.replicate.image_from == "source" else None
        return self.painter.input_for(frame.prompt, seed, size=size, image=image), seed

    def _source_picture(self, job: Job, frame: Frame, size: tuple[int, int] | None) -> Path:
        """The frame as SDXL paints over it: fitted to the painting's size (made once per size), or as extracted."""
        if size is None or self.fit_picture is None:
            return Path(frame.path)
        dest = Path(job.work_dir) / "img2img" / f"{frame.idx:06d}-{size[0]}x{size[1]}.png"
        if not dest.exists():
            dest.parent.mkdir(exist_ok=True)
            try:
                self.fit_picture(Path(frame.path), dest, size, self.settings().pipeline.fit)
            except MediaError as e:
                raise Rejected(f"cannot prepare the source frame for img2img: {e}") from None
        return dest

    def keep(self, task: Task, job: Job, status: Status, record: Callable[[], object] | None, log: Any) -> list[Task]:
        data = self.painter.result(status)
        suffix = image_suffix(data)
        if suffix is None:
            raise Transient(f"prediction {status.remote_id}: downloaded output is not an image")
        out = Path(job.work_dir) / "generated" / f"{task.idx:06d}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, data)
        self.store.transition_frame(task.job_id, task.idx, FrameState.GENERATED, image_path=out,
                                    expect=FrameState.GENERATING, durable=False)
        log.info("frame_generated", path=str(out))
        return []


def choose_seed(recorded: int | None, task: Task, base: int | None, rng: random.Random) -> int:
    """A frame keeps its recorded seed (a resumed or retried create paints the same picture) unless the task asks
    for a new one. A new seed is `replicate.seed` + frame + 7919 x (new seeds so far) when a base seed is set (the
    same video twice gives the same pictures), else a random one."""
    if recorded is not None and not task.new_seed:
        return recorded
    if base is not None:
        return base + task.idx + 7919 * task.seed_retries
    return rng.randrange(1, 2**31)


def image_suffix(data: bytes) -> str | None:
    """The file suffix for image bytes, from their magic number; None if they are not an image we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent or complete (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

"""The paid stages, each described once: the input it builds, the result it keeps, the ledger rows it owns.

A stage owns the ledger rows keyed (job, frame, its `Stage`) and moves its frame through `states.STAGE_STATES`:
before -> in flight (when its prediction is recorded) -> after (when its result is kept). The runner (runner.py)
drives every stage the same way: resume, or reuse a result already paid for (`lookup`, `available`, `reuse`), or
create; poll; then `keep` the result.

- `PromptStage`: the frame's picture -> img2prompt -> the prompt, stored with the frame; queues the image stage.
- `ImageStage`: the prompt and the frame's seed -> SDXL -> the painted image, downloaded at once and written
  atomically into the job's `generated/` folder; the frame is done. It paints at the size that follows the source's
  shape (`shape.painting_for`) and, with `replicate.image_from = "source"`, over the source frame (img2img), fitted
  to that size first (`img2img/NNNNNN-WxH.png` in the job folder, made once by the `FitPicture` given) and uploaded
  with each create; a create resumed from the ledger uploads nothing (its recorded input is polled or looked up).
"""

from __future__ import annotations

import json
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
from shd.scheduler.reuse import Lookup, content_key, file_digest, lookup_for
from shd.states import FrameState, Stage
from shd.store import Frame, Job, Prediction, Store

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

    def seed_for(self, frame: Frame, task: Task) -> int | None:
        """The seed this try sends and records (None: the model takes none)."""
        return None

    @abstractmethod
    def lookup(self, job: Job, frame: Frame, seed: int | None) -> Lookup:
        """What the result is found again by (scheduler/reuse.py): its content key, under `replicate.reuse`."""

    @abstractmethod
    def input_for(self, job: Job, frame: Frame, seed: int | None) -> dict[str, Any]:
        """The prediction input (may upload the frame)."""

    @abstractmethod
    def keep(self, task: Task, job: Job, status: Status, record: Callable[[], object] | None, log: Any) -> list[Task]:
        """Keep the result of a succeeded prediction and move the frame on; returns the tasks that follow.
        `record` writes the prediction's ledger row when it is not written yet (to be done with the result)."""

    @abstractmethod
    def available(self, source: Prediction) -> bool:
        """Whether the result of `source` (a ledger row with this stage's content key) can still be taken."""

    @abstractmethod
    def reuse(self, task: Task, job: Job, source: Prediction, log: Any) -> list[Task]:
        """Take the result of `source` instead of paying, move the frame on; returns the tasks that follow."""


class PromptStage(PaidStage):
    stage = Stage.PROMPT
    settles_with_result = True

    def __init__(self, store: Store, prompter: ImageToPrompt, settings: Callable[[], Config]):
        self.store = store
        self.prompter = prompter
        self.settings = settings

    @property
    def ref(self) -> str:
        return self.prompter.ref

    def lookup(self, job: Job, frame: Frame, seed: int | None) -> Lookup:
        key = content_key(self.ref, self.prompter.input_with(picture_digest(Path(frame.path))))
        return lookup_for(self.settings().replicate.reuse, key, painting=False, seed=None, seed_fixed=False)

    def input_for(self, job: Job, frame: Frame, seed: int | None) -> dict[str, Any]:
        return self.prompter.input_for(Path(frame.path))

    def available(self, source: Prediction) -> bool:
        return source.output_json is not None

    def reuse(self, task: Task, job: Job, source: Prediction, log: Any) -> list[Task]:
        assert source.output_json is not None  # `available` said so
        prompt = self.prompter.result(Status(source.remote_id or "", "succeeded", json.loads(source.output_json)))
        self.store.reuse_result(task.job_id, task.idx, self.stage, source, prompt=prompt)
        log.info("frame_prompted_reused", prompt=prompt[:120], reused_from=source.reused_from or source.id)
        return [Task(task.job_id, task.idx, Stage.IMAGE)]

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

    def seed_for(self, frame: Frame, task: Task) -> int | None:
        return choose_seed(frame.seed, task, self.settings().replicate.seed, self._rng)

    def _painting(self, job: Job, frame: Frame) -> tuple[tuple[int, int] | None, Path | None]:
        """The painting's size (the source's shape) and the picture it is painted over (img2img), if any."""
        cfg = self.settings()
        size = shape.painting_for(cfg.replicate.image_input, (job.width, job.height)) if job.width and job.height \
            else None
        image = self._source_picture(job, frame, size) if cfg.replicate.image_from == "source" else None
        return size, image

    def lookup(self, job: Job, frame: Frame, seed: int | None) -> Lookup:
        assert frame.prompt is not None and seed is not None  # the frame is prompted: the state machine says so
        r = self.settings().replicate
        size, image = self._painting(job, frame)
        inp = {k: v for k, v in self.painter.input_for(frame.prompt, seed, size=size).items() if k != "seed"}
        if image is not None:
            inp["image"] = picture_digest(image)
        return lookup_for(r.reuse, content_key(self.ref, inp), painting=True, seed=seed, seed_fixed=r.seed is not None)

    def input_for(self, job: Job, frame: Frame, seed: int | None) -> dict[str, Any]:
        assert frame.prompt is not None and seed is not None  # the frame is prompted: the state machine says so
        size, image = self._painting(job, frame)
        return self.painter.input_for(frame.prompt, seed, size=size, image=image)

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

    def available(self, source: Prediction) -> bool:
        path = self.store.frame(source.job_id, source.frame_idx).image_path
        return bool(path) and Path(str(path)).is_file()

    def reuse(self, task: Task, job: Job, source: Prediction, log: Any) -> list[Task]:
        painted = Path(str(self.store.frame(source.job_id, source.frame_idx).image_path))
        try:
            data = painted.read_bytes()
        except OSError as e:
            raise Transient(f"{painted}: cannot read the painting to reuse: {e.strerror}") from None
        out = self._write(job, task.idx, data, source.remote_id or "")
        self.store.reuse_result(task.job_id, task.idx, self.stage, source, image_path=out,
                                seed=source.input.get("seed"))
        log.info("frame_generated_reused", path=str(out), reused_from=source.reused_from or source.id)
        return []

    def _write(self, job: Job, idx: int, data: bytes, remote_id: str) -> Path:
        suffix = image_suffix(data)
        if suffix is None:
            raise Transient(f"prediction {remote_id}: downloaded output is not an image")
        out = Path(job.work_dir) / "generated" / f"{idx:06d}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, data)
        return out

    def keep(self, task: Task, job: Job, status: Status, record: Callable[[], object] | None, log: Any) -> list[Task]:
        out = self._write(job, task.idx, self.painter.result(status), status.remote_id)
        self.store.transition_frame(task.job_id, task.idx, FrameState.GENERATED, image_path=out,
                                    expect=FrameState.GENERATING, durable=False)
        log.info("frame_generated", path=str(out))
        return []


def picture_digest(path: Path) -> str:
    """A picture input as a content key has it (reuse.py): the digest of its bytes. Rejected if it cannot be read."""
    try:
        return file_digest(path.read_bytes())
    except OSError as e:
        raise Rejected(f"{path}: cannot read frame: {e.strerror}") from None


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

"""The FILM stage (`output.transition = "film"`): two consecutive paintings -> FILM -> the pictures between them.

It works on a pair (the gap from frame i to frame i + 1, a row of the store's `pairs`), through the same runner as
the frames' stages: the ledger row before the create, resume after a crash, the shared slots and creation limit,
the retry policy, the budget, cancel. A pair is recorded, and its task queued, as soon as both its paintings exist
(`ready`, called by the image stage in the transaction that keeps a painting; the pipeline offers the ones a
restart or a reload left unqueued). The paintings are uploaded under names ending in .png (FILM asserts .png/.jpg):
a painting SDXL returned in another format is converted once (`film/inputs/`). The answer (one PNG for
times_to_interpolate k = 1, else an mp4 of 2^k + 1 frames) is checked for that shape (and, given
`count_frames`, decoded to the end) and kept as `film/NNNNNN.png|.mp4`; one of the wrong shape fails the pair, whose
gap the video then crossfades (gaps.py). Reuse: an identical pair (both paintings' bytes, the model version and k)
already paid for is taken instead; like a prompt, FILM has no seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shd.backends.base import Interpolator, Status
from shd.config import Config
from shd.errors import MediaError, ModelFailed, Rejected, Transient
from shd.scheduler.dispatch import Task
from shd.scheduler.reuse import Lookup, content_key, lookup_for
from shd.scheduler.stages import PaidStage, picture_digest, write_atomic
from shd.states import FrameState, PairState, Stage
from shd.store import Job, Pair, Prediction, Store

# (picture, destination PNG): writes the picture as a PNG, or raises MediaError. app.py gives one with its ffmpeg.
ToPng = Callable[[Path, Path], None]
# (clip): how many frames it decodes into, or MediaError if it does not decode to the end.
CountFrames = Callable[[Path], int]


def clip_suffix(data: bytes) -> str | None:
    """What FILM returned, from its magic number: ".png" (one picture) or ".mp4" (an ISO media file), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data[4:8] == b"ftyp":
        return ".mp4"
    return None


class FilmStage(PaidStage[Pair]):
    stage = Stage.FILM
    finishes_item = True

    def __init__(self, store: Store, interpolator: Interpolator, settings: Callable[[], Config], *,
                 to_png: ToPng | None = None, count_frames: CountFrames | None = None):
        self.store = store
        self.interpolator = interpolator
        self.settings = settings
        self.to_png = to_png              # None: a painting in another format is uploaded as it is
        self.count_frames = count_frames  # None: an mp4 is kept unchecked (the in-memory tests)

    @property
    def ref(self) -> str:
        return self.interpolator.ref

    def ready(self, job_id: str, idx: int) -> list[Task]:
        """Frame `idx` was just painted: the pairs it completes (with output.transition = "film"), recorded."""
        if not self.settings().output.film:
            return []
        painted = {f.idx for f in self.store.frames_between(job_id, idx - 1, idx + 1)
                   if f.state == FrameState.GENERATED}
        gaps = [i for i in (idx - 1, idx) if {i, i + 1} <= painted]
        self.store.add_pairs(job_id, gaps)
        return [Task(job_id, i, Stage.FILM) for i in gaps]

    def item(self, task: Task) -> Pair:
        return self.store.pair(task.job_id, task.idx)

    def fail(self, task: Task, reason: str) -> None:
        self.store.transition_pair(task.job_id, task.idx, PairState.FAILED, error=reason)

    def _paintings(self, job: Job, pair: Pair) -> tuple[Path, Path]:
        frames = self.store.frames_between(job.id, pair.idx, pair.idx + 1)
        return Path(str(frames[0].image_path)), Path(str(frames[1].image_path))  # a pair has both: ready()

    def lookup(self, job: Job, item: Pair, seed: int | None) -> Lookup:
        first, second = (picture_digest(p) for p in self._paintings(job, item))
        inp = self.interpolator.input_with(first, second, self.settings().output.times_to_interpolate)
        return lookup_for(self.settings().replicate.reuse, content_key(self.ref, inp), painting=False, seed=None,
                          seed_fixed=False)

    def input_for(self, job: Job, item: Pair, seed: int | None) -> dict[str, Any]:
        first, second = (self._named_png(job, p) for p in self._paintings(job, item))
        return self.interpolator.input_for(first, second, self.settings().output.times_to_interpolate)

    def _named_png(self, job: Job, painting: Path) -> Path:
        """The painting as a file whose name ends in .png (converted once, when SDXL returned another format)."""
        if painting.suffix == ".png" or self.to_png is None:
            return painting
        dest = Path(job.work_dir) / "film" / "inputs" / f"{painting.stem}.png"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.to_png(painting, dest)
            except MediaError as e:
                raise Rejected(f"cannot make a PNG of the painting for FILM: {e}") from None
        return dest

    def available(self, source: Prediction) -> bool:
        path = self.store.pair(source.job_id, source.frame_idx).clip_path
        return bool(path) and Path(str(path)).is_file()

    def reuse(self, task: Task, job: Job, source: Prediction, log: Any) -> list[Task]:
        clip = Path(str(self.store.pair(source.job_id, source.frame_idx).clip_path))
        try:
            data = clip.read_bytes()
        except OSError as e:
            raise Transient(f"{clip}: cannot read the clip to reuse: {e.strerror}") from None
        out = self._write(job, task.idx, data, source.remote_id or "")
        self.store.reuse_result(task.job_id, task.idx, self.stage, source, clip_path=out)
        log.info("pair_interpolated_reused", path=str(out), reused_from=source.reused_from or source.id)
        return []

    def keep(self, task: Task, job: Job, status: Status, record: Callable[[], object] | None, log: Any) -> list[Task]:
        out = self._write(job, task.idx, self.interpolator.result(status), status.remote_id)
        pred = self.store.latest_prediction(task.job_id, task.idx, self.stage)
        self._check(out, int((pred.input if pred else {}).get("times_to_interpolate", 1)), status.remote_id)
        self.store.transition_pair(task.job_id, task.idx, PairState.INTERPOLATED, clip_path=out,
                                   expect=PairState.INTERPOLATING, durable=False)
        log.info("pair_interpolated", path=str(out))
        return []

    def _write(self, job: Job, idx: int, data: bytes, remote_id: str) -> Path:
        suffix = clip_suffix(data)
        if suffix is None:
            raise Transient(f"prediction {remote_id}: downloaded output is neither a PNG nor an mp4")
        out = Path(job.work_dir) / "film" / f"{idx:06d}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, data)
        return out

    def _check(self, clip: Path, times: int, remote_id: str) -> None:
        """FILM's answer has the shape asked for: a PNG for times_to_interpolate 1, else 2^times + 1 frames."""
        if (clip.suffix == ".png") != (times == 1):
            raise ModelFailed(f"prediction {remote_id}: FILM returned {clip.suffix}, not "
                              f"{'.png' if times == 1 else '.mp4'}, for times_to_interpolate = {times}")
        if clip.suffix != ".mp4" or self.count_frames is None:
            return
        try:
            frames = self.count_frames(clip)
        except MediaError as e:
            raise ModelFailed(f"prediction {remote_id}: FILM's clip does not decode ({e.reason})") from None
        if frames != 2 ** times + 1:
            raise ModelFailed(f"prediction {remote_id}: FILM's clip has {frames} frames, not {2 ** times + 1}")

"""One job's steps, through store, media and the scheduler: probe, extract (streaming frames to the scheduler),
wait for every frame to be painted or failed, fill the gaps by policy, stitch, and publish the output atomically.

`run_job()` is idempotent and resumable: called again after a crash at any point it carries on from the state the
store recorded (already-recorded frames are not extracted twice; a half-written output is never published).
No SQL and no ffmpeg argv here: those live in store.py and media.py.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shd import logs, media
from shd.config import Config
from shd.errors import InputError, MediaError, ShdError, StoreError
from shd.fill import FillRefused, plan_fill
from shd.scheduler import Engine, Task
from shd.states import STAGE_FOR, FrameState, JobState, Stage
from shd.store import Job, Store


REOFFER_EVERY = 30.0  # seconds between unprompted re-offers of a running job's unfinished frames
# A waiting job wakes at once when a frame finishes or the engine stops; this bounds how late it notices what
# another process did (`shd cancel`, `shd retry`). Each wake-up reads the store: not more often than this.
WAKE_EVERY = 3.0


class JobInterrupted(Exception):
    """Raised when the engine stops while a job is being worked on; its state stays resumable."""


def output_path_for(cfg: Config, job: Job) -> Path:
    """Where a job's video is published: --output if given, else outbox/<source stem>.mp4 (never overwriting
    another job's output: a clash gets the job id appended)."""
    if job.output_target:
        return Path(job.output_target)
    stem = Path(job.source_name).stem
    out = cfg.paths.outbox / f"{stem}.mp4"
    if out.exists():
        out = cfg.paths.outbox / f"{stem}.{job.id}.mp4"
    return out


def _out_of_space(reason: str) -> bool:
    return "No space left" in reason or "Disk quota exceeded" in reason


class JobRunner:
    """Drives jobs to done/failed. `run_job(job_id)` blocks until the job is finished or the engine stops."""

    def __init__(self, cfg: Config, store: Store, engine: Engine, ffmpeg: str,
                 on_finished: Callable[[Job], None] | None = None):
        self.cfg = cfg
        self.store = store
        self.engine = engine
        self.ffmpeg = ffmpeg
        self.on_finished = on_finished
        self.deferred: dict[str, str] = {}  # job id -> why its last run stopped short (disk full, database error)
        self.exit_codes: dict[str, int] = {}  # job id -> the CLI exit code its failure calls for (3: bad input...)

    def run_job(self, job_id: str) -> Job:
        job = self.store.job(job_id)
        log = logs.get(job=job_id, source=job.source_name)
        self.deferred.pop(job_id, None)
        try:
            if job.state == JobState.QUEUED:
                job = self.store.transition_job(job_id, JobState.EXTRACTING)
                log.info("job_started")
            if job.state == JobState.EXTRACTING:
                self._extract(job, log)
                job = self.store.transition_job(job_id, JobState.RUNNING)
            if job.state == JobState.RUNNING:
                self._wait_for_frames(job, log)
                job = self.store.transition_job(job_id, JobState.STITCHING)
            if job.state == JobState.STITCHING:
                out = self._stitch(job, log)
                job = self.store.transition_job(job_id, JobState.DONE, output=str(out))
                log.info("job_done", output=str(out))
        except JobInterrupted:
            log.info("job_interrupted", state=self.store.job(job_id).state)
            return self.store.job(job_id)
        except MediaError as e:
            if self.engine.stopping:  # ffmpeg was stopped because the daemon is: resume at the next start
                log.info("job_interrupted", state=self.store.job(job_id).state)
                return self.store.job(job_id)
            if _out_of_space(e.reason):
                return self._defer(job_id, str(e), log)
            job = self._fail(job_id, str(e), log, e.exit_code)
        except InputError as e:
            job = self._fail(job_id, str(e), log, e.exit_code)
        except FillRefused as e:
            job = self._fail(job_id, f"{job.source_name}: {e}", log)
        except (StoreError, OSError) as e:
            # Disk full, database locked or broken: not the video's fault. Loud, and tried again later.
            return self._defer(job_id, f"{type(e).__name__}: {e}", log)
        except ShdError as e:
            if self.engine.stopping:
                return self.store.job(job_id)
            job = self._fail(job_id, str(e), log, e.exit_code)
        if job.state in (JobState.DONE, JobState.FAILED) and self.on_finished:
            self.on_finished(job)
        return job

    def _defer(self, job_id: str, reason: str, log: Any) -> Job:
        log.error("job_deferred_will_retry", reason=reason)
        self.deferred[job_id] = reason
        return self.store.job(job_id)

    def _fail(self, job_id: str, reason: str, log: Any, exit_code: int = 1) -> Job:
        log.error("job_failed", reason=reason)
        self.exit_codes[job_id] = exit_code
        self.engine.drop_job(job_id)
        job = self.store.job(job_id)
        if job.state in (JobState.FAILED, JobState.CANCELED, JobState.DONE):
            return job
        return self.store.transition_job(job_id, JobState.FAILED, error=reason)

    # --- extracting ---------------------------------------------------------------------------------------------
    def _extract(self, job: Job, log: Any) -> None:
        src = Path(job.source_path or job.origin_path)
        probe = media.probe(self.ffmpeg, src)
        self.store.update_job(job.id, duration=probe.duration, width=probe.width, height=probe.height,
                              has_audio=int(probe.has_audio))
        log.info("probed", duration=probe.duration, size=f"{probe.width}x{probe.height}", audio=probe.has_audio)
        work = Path(job.work_dir)
        frames_dir = work / "frames"
        frames_dir.mkdir(parents=True, exist_ok=True)
        # Frames recorded by an interrupted run are kept (their prompts may be paid for); resume their work now.
        self._enqueue_unfinished(job.id)
        # A scratch folder of this process's own: an ffmpeg orphaned by a SIGKILLed daemon cannot write into it.
        for old in work.glob("extract.*"):
            shutil.rmtree(old, ignore_errors=True)
        scratch = work / f"extract.{os.getpid()}"
        scratch.mkdir(parents=True)

        def on_frame(index: int, path: Path) -> None:
            final = frames_dir / f"{index:06d}.png"
            if self._known_frame(job.id, index):
                path.unlink(missing_ok=True)
                return
            os.replace(path, final)
            ts = media.frame_timestamp(index, job.fps)  # seconds from the start of the source
            if self.store.add_frame(job.id, index, ts, final):
                self.engine.enqueue(Task(job.id, index, Stage.PROMPT))

        count = media.extract(self.ffmpeg, src, scratch, job.fps, on_frame, timeout=self.cfg.ffmpeg.timeout,
                              should_stop=lambda: self.engine.stopping or self._gone(job.id))
        shutil.rmtree(scratch, ignore_errors=True)
        self.store.update_job(job.id, frames_total=count)
        log.info("extracted", frames=count)

    def _known_frame(self, job_id: str, index: int) -> bool:
        try:
            self.store.frame(job_id, index)
            return True
        except ShdError:
            return False

    def _gone(self, job_id: str) -> bool:
        return self.store.job(job_id).state in (JobState.CANCELED, JobState.FAILED)

    def _enqueue_unfinished(self, job_id: str) -> None:
        for f in self.store.frames(job_id):
            stage = STAGE_FOR[FrameState(f.state)]
            if stage is not None:
                self.engine.enqueue(Task(job_id, f.idx, stage))

    # --- waiting for the paid stages ----------------------------------------------------------------------------
    def _wait_for_frames(self, job: Job, log: Any) -> None:
        next_offer = 0.0
        while True:
            if self.engine.stopping:
                raise JobInterrupted
            state = self.store.job(job.id).state
            if state != JobState.RUNNING:
                raise JobInterrupted
            counts = self.store.frame_counts(job.id)
            total = sum(counts.values())
            unfinished = total - counts.get(FrameState.GENERATED, 0) - counts.get(FrameState.FAILED, 0)
            if unfinished <= 0:
                return
            # Frames reset by `shd retry` while the job runs are unfinished but unknown to the engine: offer the
            # unfinished frames again (the engine ignores ones it has) when it holds fewer of this job's tasks than
            # that, and as a safety net every REOFFER_EVERY s. Not on every wake-up: that would read every frame.
            now = time.monotonic()
            if unfinished > self.engine.queued(job.id) or now >= next_offer:
                self._enqueue_unfinished(job.id)
                next_offer = now + REOFFER_EVERY
            with self.engine.frame_done:
                if not self.engine.stopping:  # checked under the lock: a stop cannot slip in before the wait
                    self.engine.frame_done.wait(timeout=WAKE_EVERY)

    # --- stitching ----------------------------------------------------------------------------------------------
    def _stitch(self, job: Job, log: Any) -> Path:
        frames = self.store.frames(job.id)
        if not frames:
            raise MediaError(job.source_name, "no frames to stitch")
        slots = plan_fill([f.state == FrameState.GENERATED for f in frames], self.cfg.pipeline.on_frame_failure)
        work = Path(job.work_dir)
        seq = work / "stitch"
        shutil.rmtree(seq, ignore_errors=True)
        seq.mkdir(parents=True)
        fills: dict[int, str] = {}
        for slot in slots:
            src_frame = frames[slot.from_index]
            painted = src_frame.image_path if slot.kind == "generated" else None
            picture = Path(painted or src_frame.path)
            if slot.filled:
                fills[slot.index] = (f"held frame {slot.from_index}" if slot.kind == "generated"
                                     else "source frame")
            self._place(picture, seq / f"{slot.index:06d}.png")
        if fills:
            self.store.set_filled(job.id, fills)
            log.warning("frames_filled", count=len(fills), policy=self.cfg.pipeline.on_frame_failure)
        out = output_path_for(self.cfg, job)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{job.id}.tmp")
        probe_w, probe_h = job.width or 2, job.height or 2
        audio = (Path(job.source_path or job.origin_path)
                 if self.cfg.pipeline.audio == "auto" and job.has_audio else None)
        try:
            media.stitch(self.ffmpeg, seq, fps=job.fps, duration=job.duration or len(frames) / job.fps,
                         size=media.output_size(probe_w, probe_h), out=tmp, audio_src=audio,
                         fit=self.cfg.pipeline.fit, out_fps=self.cfg.pipeline.output_fps,
                         crf=self.cfg.pipeline.crf, timeout=self.cfg.ffmpeg.timeout)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(seq, ignore_errors=True)
        return out

    def _place(self, picture: Path, dest: Path) -> None:
        if picture.suffix.lower() == ".png":
            try:
                os.link(picture, dest)
            except OSError:
                shutil.copyfile(picture, dest)
            return
        # JPEG/WebP output: convert so the image sequence is uniform PNG.
        media.run(media.plan_png(self.ffmpeg, picture, dest), timeout=60, path_for_errors=picture, check=True)


def start_job_thread(runner: JobRunner, job_id: str, done: threading.Event | None = None) -> threading.Thread:
    """Run one job in a daemon thread (the service keeps up to pipeline.max_jobs of these)."""

    def target() -> None:
        try:
            runner.run_job(job_id)
        except Exception:  # noqa: BLE001 - a job thread must never take the daemon down
            logs.get(job=job_id).exception("job_thread_crashed")
        finally:
            if done is not None:
                done.set()

    t = threading.Thread(target=target, name=f"shd-job-{job_id}", daemon=True)
    t.start()
    return t

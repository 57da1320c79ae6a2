"""One job's steps, through store, media and the scheduler: probe and estimate, extract (streaming frames to the
scheduler), wait for every frame to be painted or failed, fill the gaps by policy, stitch, verify, and publish.

Size guard (`pipeline.max_frames`): a source whose header promises more frames is refused before extraction; one
that decodes into more than its header promised is refused as soon as extraction passes the limit, and its frames
past the promise wait for the count before anything is paid for them. Either way nothing is paid beyond the frames
the header promised, and a refused file is moved aside with its frame count and estimate.

`run_job()` is idempotent and resumable: called again after a crash at any point it carries on from the state the
store recorded (already-recorded frames are not extracted twice). It first stops any ffmpeg an earlier, killed
run left working in the job folder (`children.stop_leftovers`), and every run extracts and stitches under names of
its own. The stitched video is checked (it decodes to the end, it lasts as long as the source) and only then
staged with its sidecars in `<job folder>/publish/` (outputs.py); a staged video is never stitched again, and
`publish.publish` gives the set its outbox stem (crash-safe through `publish/journal`). A set staged before the
job went back to painting (a done job's retry) is of other frames: it is thrown away (an interrupted publish of it
undone) and made again. A job canceled while it stitches publishes nothing.
A full disk defers the job (`deferred`: tried again later), whichever write ran out of space.
No SQL and no ffmpeg argv here: those live in store/ and media/.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shd import (children, diskfull, estimate, gaps, inbetweens, logs, media, outputs, perms, png, pricing, publish,
                 testpoints)
from shd.config import Config
from shd.errors import (DiskError, DiskFull, IllegalTransition, InputError, MediaError, OutputExists, ShdError,
                        StoreError)
from shd.fill import FillRefused, Slot, plan_fill
from shd.scheduler import Engine, Task
from shd.states import FINISHED_PAIRS, STAGE_FOR, FrameState, JobState, PairState, Stage
from shd.store import Job, Store


REOFFER_EVERY = 30.0  # seconds between unprompted re-offers of a running job's unfinished frames
# A waiting job wakes at once when a frame finishes or the engine stops; this bounds how late it notices what
# another process did (`shd cancel`, `shd retry`). Each wake-up reads the store: not more often than this.
WAKE_EVERY = 3.0


class JobInterrupted(Exception):
    """Raised when the engine stops while a job is being worked on; its state stays resumable."""


class JobLeft(Exception):
    """Raised when the runner's `give_up` says to stop waiting (`shd process`: a refused token, an API unreachable
    for too long); the job stays recorded and resumable, and `deferred` says why."""

    def __init__(self, why: ShdError):
        self.why = why
        super().__init__(str(why))


VIDEO_SUFFIX = ".mp4"  # of a video published to the outbox


class JobRunner:
    """Drives jobs to done/failed. `run_job(job_id)` blocks until the job is finished or the engine stops."""

    def __init__(self, cfg: Config, store: Store, engine: Engine, ffmpeg: str,
                 on_finished: Callable[[Job], None] | None = None):
        self.cfg = cfg
        self.store = store
        self.engine = engine
        self.ffmpeg = ffmpeg
        self.on_finished = on_finished
        self.deferred: dict[str, ShdError] = {}  # job id -> why its last run stopped short (disk full, database...)
        # Asked while a job waits (`shd process` sets it): an error to stop waiting with, the job kept; None: wait on.
        # `shd process` ends so when the credentials are refused, the API is unreachable too long, or the job is held
        # by a budget cap with nothing of it in flight (errors.BudgetHeld).
        self.give_up: Callable[[], ShdError | None] = lambda: None
        # `shd process`: told the estimate before anything is paid.
        self.on_estimate: Callable[[Job, pricing.Estimate], None] | None = None

    def run_job(self, job_id: str) -> Job:
        self.engine.work_on(job_id)  # its predictions in flight are resumed here: waited for (scheduler/reuse.py)
        try:
            return self._run_job(job_id)
        finally:
            self.engine.done_with(job_id)

    def _run_job(self, job_id: str) -> Job:
        job = self.store.job(job_id)
        log = logs.get(job=job_id, source=job.source_name)
        self.deferred.pop(job_id, None)
        try:
            if Path(job.work_dir).is_dir():
                for pid in children.stop_leftovers(Path(job.work_dir)):
                    log.warning("leftover_ffmpeg_stopped", pid=pid)
            if job.state == JobState.QUEUED:
                job = self.store.transition_job(job_id, JobState.EXTRACTING)
                log.info("job_started")
            if job.state == JobState.EXTRACTING:
                self._extract(job, log)
                job = self.store.transition_job(job_id, JobState.RUNNING)
            if job.state == JobState.RUNNING:
                self._wait_for_frames(job, log)
                self._discard_staged(job)  # staged by an earlier run, of the frames as they were then
                job = self.store.transition_job(job_id, JobState.STITCHING)
            if job.state == JobState.STITCHING:
                staged = self._stitch(job, log)
                if self._gone(job_id):  # canceled while it stitched: nothing of it is published
                    raise JobInterrupted
                out, fresh = self._publish(job, staged)
                try:
                    job = self.store.transition_job(job_id, JobState.DONE, output=str(out))
                except IllegalTransition:
                    if not self._gone(job_id):
                        raise
                    if fresh is not None:  # canceled the very moment it was published: taken back
                        publish.withdraw(fresh, self._files(job, staged), video=self._video_suffix(job))
                    raise JobInterrupted from None
                testpoints.reached("done-recorded")
                shutil.rmtree(Path(job.work_dir) / "publish", ignore_errors=True)
                log.info("job_done", output=str(out))
        except JobInterrupted:
            log.info("job_interrupted", state=self.store.job(job_id).state)
            return self.store.job(job_id)
        except JobLeft as e:
            return self._defer(job_id, e.why, log)
        except DiskError as e:
            return self._defer(job_id, e, log)
        except MediaError as e:
            if self.engine.stopping:  # ffmpeg was stopped because the daemon is: resume at the next start
                log.info("job_interrupted", state=self.store.job(job_id).state)
                return self.store.job(job_id)
            job = self._fail(job_id, str(e), log, e.exit_code)
        except InputError as e:
            job = self._fail(job_id, str(e), log, e.exit_code)
        except FillRefused as e:
            job = self._fail(job_id, f"{job.source_name}: {e}", log)
        except (StoreError, OSError) as e:
            # Disk full, database locked or broken: not the video's fault. Loud, and tried again later.
            if isinstance(e, StoreError):
                return self._defer(job_id, e, log)
            if diskfull.is_full(e):
                return self._defer(job_id, DiskFull(e.filename or job.work_dir), log)
            return self._defer(job_id, DiskError(f"{type(e).__name__}: {e}"), log)
        except ShdError as e:
            if self.engine.stopping:
                return self.store.job(job_id)
            job = self._fail(job_id, str(e), log, e.exit_code)
        if job.state in (JobState.DONE, JobState.FAILED) and self.on_finished:
            self.on_finished(job)
        return job

    def _defer(self, job_id: str, why: ShdError, log: Any) -> Job:
        log.error("job_deferred_will_retry", reason=str(why))
        self.deferred[job_id] = why
        return self.store.job(job_id)

    def _fail(self, job_id: str, reason: str, log: Any, exit_code: int = 1) -> Job:
        log.error("job_failed", reason=reason)
        self.engine.drop_job(job_id)
        job = self.store.job(job_id)
        if job.state in (JobState.FAILED, JobState.CANCELED, JobState.DONE):
            return job
        return self.store.transition_job(job_id, JobState.FAILED, error=reason, exit_code=exit_code)

    # --- extracting ---------------------------------------------------------------------------------------------
    def _extract(self, job: Job, log: Any) -> None:
        src = Path(job.source_path or job.origin_path)
        probe = media.probe(self.ffmpeg, src)
        self.store.update_job(job.id, duration=probe.duration, width=probe.width, height=probe.height,
                              has_audio=int(probe.has_audio))
        log.info("probed", duration=probe.duration, size=f"{probe.width}x{probe.height}", audio=probe.has_audio,
                 sar=f"{probe.sar[0]}:{probe.sar[1]}")
        promised = media.frame_count(probe.duration, job.fps)
        est = self._estimate(job, promised, log)
        if promised > self.cfg.pipeline.max_frames:
            raise InputError(src, estimate.over_limit(self.cfg, str(promised), est, "by its header"))
        work = Path(job.work_dir)
        frames_dir = work / "frames"
        frames_dir.mkdir(parents=True, exist_ok=True)
        # Frames recorded by an interrupted run are kept (their prompts may be paid for); resume their work now.
        self._enqueue_unfinished(job.id, below=promised)
        # A scratch folder of this run's own (an earlier run's ffmpeg was stopped above; its folder goes).
        for old in work.glob("extract.*"):
            shutil.rmtree(old, ignore_errors=True)
        scratch = work / f"extract.{secrets.token_hex(4)}"
        scratch.mkdir(parents=True)

        def on_frame(index: int, path: Path) -> None:
            if index >= self.cfg.pipeline.max_frames:
                over = estimate.for_frames(self.cfg, index + 1, self.store)
                raise InputError(src, estimate.over_limit(self.cfg, f"more than {index}", over,
                                                          f"decoded; its header promised {promised}"))
            final = frames_dir / f"{index:06d}.png"
            if self._known_frame(job.id, index):
                path.unlink(missing_ok=True)
                return
            os.replace(path, final)
            ts = media.frame_timestamp(index, job.fps)  # seconds from the start of the source
            # A frame past what the header promised waits for the count (the job's next step offers it).
            if self.store.add_frame(job.id, index, ts, final) and index < promised:
                self.engine.enqueue(Task(job.id, index, Stage.PROMPT))

        def should_stop() -> bool:
            return self.engine.stopping or self._gone(job.id) or self.give_up() is not None

        try:
            count = media.extract(self.ffmpeg, src, scratch, job.fps, on_frame, timeout=self.cfg.ffmpeg.timeout,
                                  should_stop=should_stop,
                                  size=None if probe.sar == (1, 1) else (probe.width, probe.height))
        except MediaError:
            why = self.give_up()
            if why is not None:
                raise JobLeft(why) from None
            raise
        finally:  # also when the input turns out truncated or bad: no scratch folder is left behind
            shutil.rmtree(scratch, ignore_errors=True)
        self.store.update_job(job.id, frames_total=count)
        log.info("extracted", frames=count)
        if count != promised:
            self._estimate(job, count, log)

    def _estimate(self, job: Job, frames: int, log: Any) -> pricing.Estimate:
        """Estimate the job (before its first paid call: a job over budget.per_job_usd is held on it), record and
        log it, and tell `shd process`."""
        est = estimate.for_frames(self.cfg, frames, self.store)
        self.store.update_job(job.id, estimate_usd=round(est.usd, 6), estimate_seconds=round(est.seconds, 1))
        log.info("job_estimate", frames=frames, predictions=est.predictions, usd=round(est.usd, 4),
                 seconds=round(est.seconds), estimate=est.summary())
        if self.on_estimate is not None:
            self.on_estimate(job, est)
        return est

    def _known_frame(self, job_id: str, index: int) -> bool:
        try:
            self.store.frame(job_id, index)
            return True
        except ShdError:
            return False

    def _gone(self, job_id: str) -> bool:
        return self.store.job(job_id).state in (JobState.CANCELED, JobState.FAILED)

    def _enqueue_unfinished(self, job_id: str, below: int | None = None) -> None:
        """Offer the engine every unfinished frame (of those before `below`, when given) and, with FILM, every pair
        whose paintings exist and that is not interpolated or failed yet (recording the ones a restart or a reload
        left unrecorded)."""
        frames = self.store.frames(job_id)
        for f in frames:
            stage = STAGE_FOR[FrameState(f.state)]
            if stage is not None and (below is None or f.idx < below):
                self.engine.enqueue(Task(job_id, f.idx, stage))
        if self.cfg.output.film:
            self.store.add_pairs(job_id, gaps.ready([f.state == FrameState.GENERATED for f in frames]))
            for p in self.store.pairs(job_id):
                if p.state not in FINISHED_PAIRS:
                    self.engine.enqueue(Task(job_id, p.idx, Stage.FILM))

    # --- waiting for the paid stages ----------------------------------------------------------------------------
    def _wait_for_frames(self, job: Job, log: Any) -> None:
        """Until every frame is painted or failed and, with FILM, every pair of paintings interpolated or failed."""
        next_offer = 0.0
        pairs_offered = False
        while True:
            if self.engine.stopping:
                raise JobInterrupted
            state = self.store.job(job.id).state
            if state != JobState.RUNNING:
                raise JobInterrupted
            counts = self.store.frame_counts(job.id)
            total = sum(counts.values())
            unfinished = total - counts.get(FrameState.GENERATED, 0) - counts.get(FrameState.FAILED, 0)
            if self.cfg.output.film:
                pairs = self.store.pair_counts(job.id)
                unfinished += pairs.get(PairState.PAINTED, 0) + pairs.get(PairState.INTERPOLATING, 0)
            if unfinished <= 0:
                if self.cfg.output.film and not pairs_offered:
                    # Once: record the pairs a reload to FILM (or anything else) left unrecorded, and wait for them.
                    self._enqueue_unfinished(job.id)
                    pairs_offered = True
                    continue
                return
            why = self.give_up()
            if why is not None:
                raise JobLeft(why)
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

    # --- stitching and publishing --------------------------------------------------------------------------------
    def _stitch(self, job: Job, log: Any) -> tuple[Path, dict[str, Path]]:
        """The job's verified video and its sidecars, staged in its folder (made now unless an earlier run staged
        them already)."""
        work = Path(job.work_dir)
        done = outputs.staged(work / "publish")
        if done is not None:
            return done
        frames = self.store.frames(job.id)
        if not frames:
            raise MediaError(job.source_name, "no frames to stitch")
        slots = plan_fill([f.state == FrameState.GENERATED for f in frames], self.cfg.pipeline.on_frame_failure)
        for old in work.glob("stitch.*"):
            shutil.rmtree(old, ignore_errors=True)
        run_dir = work / f"stitch.{secrets.token_hex(4)}"  # this run's own names: nothing else writes here
        seq = run_dir / "frames"
        seq.mkdir(parents=True)
        try:
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
                frames = self.store.frames(job.id)  # with how each slot was filled, for prompts.csv
            audio = (Path(job.source_path or job.origin_path)
                     if self.cfg.pipeline.audio == "auto" and job.has_audio else None)
            between = self._between(job, slots, seq, run_dir / "between", log) if self.cfg.output.film else None
            video = outputs.Video(seq, job.fps, job.duration or len(frames) / job.fps,
                                  media.output_size(job.width or 2, job.height or 2), audio, between)
            done = outputs.make(self.ffmpeg, self.cfg, run_dir, work / "publish", frames, slots, video)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        log.info("stitched", frames=len(slots), transition=self.cfg.output.transition)
        return done

    def _between(self, job: Job, slots: list[Slot], seq: Path, folder: Path, log: Any) -> list[list[Path]]:
        """With FILM, the pictures between each slot's picture (in `seq`) and the next's (gaps.py): FILM's, from
        its pair's clip, or a crossfade made here, recorded on the pair with the reason (shown in status)."""
        pairs = {p.idx: p for p in self.store.pairs(job.id)}
        plan = gaps.plan(slots, {i for i, p in pairs.items() if p.state == PairState.INTERPOLATED},
                         {i: p.error for i, p in pairs.items()})
        count = 2 ** self.cfg.output.times_to_interpolate - 1
        timeout = self.cfg.ffmpeg.timeout
        between: list[list[Path]] = []
        fills: dict[int, tuple[str, str]] = {}
        for gap in plan:
            where = folder / f"{gap.index:06d}"
            why = gap.why or ""
            if gap.film:
                try:
                    clip = Path(str(pairs[gap.index].clip_path))
                    between.append(inbetweens.between(self.ffmpeg, clip, where, timeout=timeout))
                    continue
                except MediaError as e:
                    why = f"its clip cannot be read ({e.reason})"
            fills[gap.index] = (gaps.CROSSFADE, why)
            first, second = seq / f"{gap.index:06d}.png", seq / f"{gap.index + 1:06d}.png"
            with first.open("rb") as fh:
                size = png.size(fh.read(24)) or media.output_size(job.width or 2, job.height or 2)
            between.append(inbetweens.blend(self.ffmpeg, first, second, where, count=count, size=size,
                                            fit=self.cfg.pipeline.fit, timeout=timeout) if gap.blend else [])
        if fills:
            self.store.set_pair_fills(job.id, fills)
            log.warning("pairs_crossfaded", count=len(fills), first=min(fills), reason=fills[min(fills)][1])
        return between

    def _video_suffix(self, job: Job) -> str:
        """The suffix the job's video is published with: its recorded output's, its `--output`'s, else `.mp4`."""
        named = job.output or job.output_target
        return Path(named).suffix if named else VIDEO_SUFFIX

    def _files(self, job: Job, staged: tuple[Path, dict[str, Path]]) -> dict[str, Path]:
        """The staged set as published: suffix -> staged file (an --output ending like a sidecar takes its place)."""
        video, sidecar_files = staged
        return {**sidecar_files, self._video_suffix(job): video}

    def _discard_staged(self, job: Job) -> None:
        """Remove what an earlier run staged in `publish/` (a crash after the job was recorded done left it; a done
        job's retry repaints frames): it is made again from the frames as they are now. A publish of it that was
        interrupted is undone first, so none of its files stays in the outbox without the others."""
        publish_dir = Path(job.work_dir) / "publish"
        old = outputs.staged(publish_dir)
        if old is not None:
            publish.abandon(self._files(job, old), publish_dir / "journal")
        shutil.rmtree(publish_dir, ignore_errors=True)

    def _publish(self, job: Job, staged: tuple[Path, dict[str, Path]]) -> tuple[Path, dict[str, Path] | None]:
        """Give the staged video and its sidecars their names: `--output FILE` (the sidecars beside it, same stem),
        else the first free `<stem>[-N]` in the outbox for the whole set. A job published before (`shd retry` of a
        done job) replaces its set in place, under the same names, unless another job has published under that
        stem since (the user moved the old files away): then it takes a free name, as a first publish does.
        Returns the video's path, and the set (suffix -> path) when it was published under a new name."""
        video, sidecar_files = staged
        suffix = self._video_suffix(job)
        files = self._files(job, staged)
        if job.output and not self._stem_taken(job):
            old = Path(job.output)
            perms.make_folder(old.parent)
            done = publish.republish(files, old.with_name(old.name[:len(old.name) - len(old.suffix)]),
                                     video=suffix, journal=video.with_name("journal"), mode=perms.output_mode())
            return done[suffix], None
        bases: Iterable[Path]
        if job.output_target:
            target = Path(job.output_target)
            folder, bases = target.parent, [target.with_name(target.name[:len(target.name) - len(suffix)])]
        else:
            folder = self.cfg.paths.outbox
            bases = publish.candidates(folder, Path(job.source_name).stem, files)
            if not folder.is_dir() and not folder.parent.is_dir():  # not made again on the root file system
                raise DiskError(f"{folder}: the outbox is gone, and the folder it was in too (an unmounted share?); "
                                f"the finished video waits in {video.parent} and is published once it is back")
        perms.make_folder(folder)
        try:
            done = publish.publish(files, bases, video=suffix, journal=video.with_name("journal"),
                                   overwrite=bool(job.overwrite), mode=perms.output_mode())
        except FileExistsError:
            raise OutputExists(job.output_target or folder, f"the finished video is kept in {video}: move that "
                               f"file away, then `shd retry {job.id}` publishes it") from None
        return done[suffix], done

    def _stem_taken(self, job: Job) -> bool:
        """Whether another job has published under the stem of this job's recorded output."""
        assert job.output is not None
        old = Path(job.output)
        stem = old.with_name(old.name[:len(old.name) - len(old.suffix)])
        for other in self.store.jobs((JobState.DONE,)):
            if other.id != job.id and other.output:
                theirs = Path(other.output)
                if theirs.with_name(theirs.name[:len(theirs.name) - len(theirs.suffix)]) == stem:
                    return True
        return False

    def _place(self, picture: Path, dest: Path) -> None:
        if picture.suffix.lower() == ".png":
            media.link_or_copy(picture, dest)
        else:  # JPEG/WebP output: convert so the image sequence is uniform PNG.
            media.to_png(self.ffmpeg, picture, dest, timeout=60)


def start_job_thread(runner: JobRunner, job_id: str, done: threading.Event | None = None) -> threading.Thread:
    """Run one job in a daemon thread (the service keeps up to pipeline.max_jobs of these)."""

    runner.engine.work_on(job_id)  # at work from now, not from when the thread gets going (scheduler/reuse.py)

    def target() -> None:
        try:
            runner.run_job(job_id)
        except ShdError as e:  # e.g. the database failed while a failure was being recorded: said, not a crash
            logs.get(job=job_id).error("job_stopped", error=str(e))
        except Exception:  # noqa: BLE001 - a job thread must never take the daemon down
            logs.get(job=job_id).exception("job_thread_crashed")
        finally:
            runner.engine.done_with(job_id)
            if done is not None:
                done.set()

    t = threading.Thread(target=target, name=f"shd-job-{job_id}", daemon=True)
    t.start()
    return t

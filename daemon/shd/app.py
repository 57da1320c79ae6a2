"""Wiring: build the store, the backend (Replicate's, unless one is given), the scheduler and the job runner.

Both `shd process` and `shd run` start here, so the two paths share every part.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shd import children, config, inbetweens, logs, media, names
from shd.backends import models
from shd.backends.base import Backend
from shd.backends.replicate import ReplicateRemote
from shd.config import Config
from shd.errors import InputError
from shd.pipeline import JobRunner
from shd.scheduler import Engine
from shd.store import Job, Store


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class App:
    cfg: Config
    store: Store
    backend: Backend
    engine: Engine
    runner: JobRunner
    ffmpeg: str

    def close(self) -> None:
        self.engine.stop()
        children.stop_all()
        self.store.close()


def build(cfg: Config, *, on_finished: Callable[[Job], None] | None = None, backend: Backend | None = None,
          check_store: bool = False) -> App:
    """Check the token (for the Replicate backend, the default) and ffmpeg first (nothing starts without them), then
    open the store (`check_store`: check the whole database file first) and start the engine."""

    def current_token() -> str:  # read with the config in force, after any reload
        return config.read_token(engine.cfg)

    token_provider: Callable[[], str] | None = None
    if backend is None:
        token = config.read_token(cfg)
        logs.redact(token)
        r = cfg.replicate
        remote = ReplicateRemote(token, create_wait=r.create_wait, request_timeout=r.request_timeout,
                                 inline_max_bytes=r.inline_max_kb * 1024)
        backend = models.backend(remote, r)
        token_provider = current_token
    ffmpeg = media.find_ffmpeg(cfg.ffmpeg.path)
    store = Store.open(cfg.paths.database, check=check_store)
    engine = Engine(cfg, store, backend, token_provider=token_provider,
                    fit_picture=lambda src, dest, size, fit: media.fit_picture(
                        ffmpeg, src, dest, size=size, fit=fit, timeout=engine.cfg.ffmpeg.timeout),
                    to_png=lambda src, dest: media.to_png(ffmpeg, src, dest, timeout=engine.cfg.ffmpeg.timeout),
                    count_frames=lambda clip: inbetweens.count_frames(ffmpeg, clip, timeout=engine.cfg.ffmpeg.timeout))
    runner = JobRunner(cfg, store, engine, ffmpeg, on_finished=on_finished)
    engine.start()
    return App(cfg, store, backend, engine, runner, ffmpeg)


def create_process_job(cfg: Config, store: Store, video: Path, output: Path | None, *,
                       overwrite: bool = False, source_sha256: str | None = None,
                       settings_sha256: str | None = None) -> Job:
    """A job for `shd process`: the source stays where it is, untouched. InputError for a path the store cannot
    record (a name that is not UTF-8). The digests say what work it is (identity.py), so the same file run again
    resumes it."""
    src = video.absolute()
    if names.storable(str(src)) != str(src):
        raise InputError(names.storable(str(src)), "its path is not valid UTF-8: rename it first")
    job_id = new_job_id()
    return store.create_job(job_id, source_name=src.name, origin_path=src, source_path=src,
                            work_dir=cfg.paths.jobs_dir / job_id, mode="process", fps=cfg.pipeline.fps,
                            output_target=output.absolute() if output else None, overwrite=overwrite,
                            source_sha256=source_sha256, settings_sha256=settings_sha256)

"""What the store's queries return: one frozen dataclass per table row (jobs, frames, FILM's pairs, predictions)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar


@dataclass(frozen=True)
class Job:
    id: str
    source_name: str
    origin_path: str
    source_path: str | None
    work_dir: str
    mode: str
    output_target: str | None
    state: str
    error: str | None
    output: str | None
    fps: float
    duration: float | None
    width: int | None
    height: int | None
    has_audio: int | None
    frames_total: int | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    # Added by migration m002 (defaults: `shd status` may read a database the daemon has not migrated yet).
    exit_code: int | None = None  # the CLI exit code a failed job calls for (3: bad input, 4: ffmpeg...)
    overwrite: int = 0            # `shd process --overwrite`: the output may replace an existing file
    # Added by migration m003.
    estimate_usd: float | None = None       # what the whole job is expected to cost (dollars), once probed
    estimate_seconds: float | None = None   # and how long its predictions are expected to take
    held: str | None = None                 # why no new prediction of it starts (a budget cap), else None
    # Added by migration m004: what a `shd process` job is the work of (identity.py).
    source_sha256: str | None = None
    settings_sha256: str | None = None


@dataclass(frozen=True)
class Frame:
    job_id: str
    idx: int
    state: str
    ts: float
    path: str
    prompt: str | None
    image_path: str | None
    seed: int | None
    error: str | None
    filled_with: str | None
    updated_at: float


@dataclass(frozen=True)
class Pair:
    """The gap from frame `idx` to frame `idx` + 1, interpolated by FILM (migration m004)."""

    job_id: str
    idx: int
    state: str
    clip_path: str | None
    error: str | None
    filled_with: str | None
    updated_at: float


@dataclass(frozen=True)
class Prediction:
    id: int
    job_id: str
    frame_idx: int
    stage: str
    attempt: int
    reason: str
    model: str
    input_json: str
    remote_id: str | None
    status: str
    error: str | None
    output_json: str | None
    predict_time: float | None
    created_at: float
    updated_at: float
    completed_at: float | None
    # Added by migration m003.
    cost_usd: float | None = None      # dollars, once finished (predict_time x the price then); 0 for a reuse
    reuse_key: str | None = None       # the content key of its result (scheduler/reuse.py)
    reused_from: int | None = None     # status 'reused': the paid prediction whose result was taken
    saved_usd: float | None = None     # status 'reused': what that prediction cost

    @property
    def input(self) -> dict[str, Any]:
        return dict(json.loads(self.input_json))


T = TypeVar("T")


def _row(cls: type[T], row: Mapping[str, Any]) -> T:
    return cls(**row)  # every query selects exactly the table's columns (SELECT *)

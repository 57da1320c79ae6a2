"""PURE: job, frame and pair states, the transitions between them that are legal, and what a frame needs next.

No I/O here. The store asks `check_job` / `check_frame` / `check_pair` inside every transition's transaction and
refuses what this module forbids, so an illegal state can never be written.

Jobs:   queued -> extracting -> running -> stitching -> done
        any unfinished state -> failed | canceled;  failed | canceled -> queued (shd retry)
        done -> running (shd retry of a done job with failed frames: painted again, then published again in place)
Frames: extracted -> prompting -> prompted -> generating -> generated
        any unfinished state -> failed (with a reason); failed -> extracted | prompted (shd retry)
        an in-flight state may fall back one step (prompting -> extracted, generating -> prompted) when its
        prediction is abandoned (canceled, or the job is retried).
Pairs:  painted -> interpolating -> interpolated          (output.transition = "film": the gap from frame i to
        painted | interpolating -> failed; failed -> painted   frame i + 1, once both are painted; shd retry)
"""

from __future__ import annotations

from enum import StrEnum

from shd.errors import IllegalTransition


class JobState(StrEnum):
    QUEUED = "queued"
    EXTRACTING = "extracting"
    RUNNING = "running"
    STITCHING = "stitching"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"


class FrameState(StrEnum):
    EXTRACTED = "extracted"
    PROMPTING = "prompting"
    PROMPTED = "prompted"
    GENERATING = "generating"
    GENERATED = "generated"
    FAILED = "failed"


class PairState(StrEnum):
    """A gap between two consecutive paintings, interpolated by FILM. A pair exists once both are painted."""

    PAINTED = "painted"
    INTERPOLATING = "interpolating"
    INTERPOLATED = "interpolated"
    FAILED = "failed"


class Stage(StrEnum):
    """The paid steps: two per frame (prompt, image), and one per pair of consecutive paintings with FILM."""

    PROMPT = "prompt"
    IMAGE = "image"
    FILM = "film"


J, F = JobState, FrameState

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    J.QUEUED: frozenset({J.EXTRACTING, J.FAILED, J.CANCELED}),
    J.EXTRACTING: frozenset({J.RUNNING, J.FAILED, J.CANCELED}),
    J.RUNNING: frozenset({J.STITCHING, J.FAILED, J.CANCELED}),
    J.STITCHING: frozenset({J.DONE, J.FAILED, J.CANCELED}),
    J.DONE: frozenset({J.RUNNING}),
    J.FAILED: frozenset({J.QUEUED}),
    J.CANCELED: frozenset({J.QUEUED}),
}

FRAME_TRANSITIONS: dict[FrameState, frozenset[FrameState]] = {
    F.EXTRACTED: frozenset({F.PROMPTING, F.FAILED}),
    F.PROMPTING: frozenset({F.PROMPTED, F.FAILED, F.EXTRACTED}),
    F.PROMPTED: frozenset({F.GENERATING, F.FAILED}),
    F.GENERATING: frozenset({F.GENERATED, F.FAILED, F.PROMPTED}),
    F.GENERATED: frozenset(),
    F.FAILED: frozenset({F.EXTRACTED, F.PROMPTED}),
}

PAIR_TRANSITIONS: dict[PairState, frozenset[PairState]] = {
    PairState.PAINTED: frozenset({PairState.INTERPOLATING, PairState.FAILED}),
    PairState.INTERPOLATING: frozenset({PairState.INTERPOLATED, PairState.FAILED, PairState.PAINTED}),
    PairState.INTERPOLATED: frozenset(),
    PairState.FAILED: frozenset({PairState.PAINTED}),
}

UNFINISHED_JOBS = frozenset({J.QUEUED, J.EXTRACTING, J.RUNNING, J.STITCHING})
FINISHED_FRAMES = frozenset({F.GENERATED, F.FAILED})
FINISHED_PAIRS = frozenset({PairState.INTERPOLATED, PairState.FAILED})

# Which paid stage a frame in a given state is waiting for (None: nothing to pay for).
STAGE_FOR: dict[FrameState, Stage | None] = {
    F.EXTRACTED: Stage.PROMPT,
    F.PROMPTING: Stage.PROMPT,
    F.PROMPTED: Stage.IMAGE,
    F.GENERATING: Stage.IMAGE,
    F.GENERATED: None,
    F.FAILED: None,
}

# (state before the stage, in-flight state, state after the stage): of the frame, or of the pair for FILM
STAGE_STATES: dict[Stage, tuple[StrEnum, StrEnum, StrEnum]] = {
    Stage.PROMPT: (F.EXTRACTED, F.PROMPTING, F.PROMPTED),
    Stage.IMAGE: (F.PROMPTED, F.GENERATING, F.GENERATED),
    Stage.FILM: (PairState.PAINTED, PairState.INTERPOLATING, PairState.INTERPOLATED),
}


def job_can(current: str, target: str) -> bool:
    """Whether a job may move from `current` to `target`."""
    return JobState(target) in JOB_TRANSITIONS[JobState(current)]


def frame_can(current: str, target: str) -> bool:
    """Whether a frame may move from `current` to `target`."""
    return FrameState(target) in FRAME_TRANSITIONS[FrameState(current)]


def check_job(job_id: str, current: str, target: str) -> None:
    """Raise IllegalTransition unless the job may move from `current` to `target`."""
    if not job_can(current, target):
        raise IllegalTransition(f"job {job_id}", current, target)


def check_frame(job_id: str, index: int, current: str, target: str) -> None:
    """Raise IllegalTransition unless the frame may move from `current` to `target`."""
    if not frame_can(current, target):
        raise IllegalTransition(f"job {job_id} frame {index}", current, target)


def check_pair(job_id: str, index: int, current: str, target: str) -> None:
    """Raise IllegalTransition unless the pair (the gap after frame `index`) may move from `current` to `target`."""
    if PairState(target) not in PAIR_TRANSITIONS[PairState(current)]:
        raise IllegalTransition(f"job {job_id} pair {index}", current, target)


def retry_state(has_prompt: bool) -> FrameState:
    """Where `shd retry` sends a failed frame: back to image generation if its prompt survived, else to prompting."""
    return F.PROMPTED if has_prompt else F.EXTRACTED

"""PURE: which picture stands in each slot of the output video, given which frames were painted.

A frame that finally failed does not sink the video; `pipeline.on_frame_failure` says what fills its slot:
  hold    the nearest earlier painted frame (the nearest later one at the start; the source frame if none was painted)
  source  the frame's own source picture
  fail    nothing: the job fails (plan_fill raises)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["generated", "source"]


@dataclass(frozen=True)
class Slot:
    """Slot `index` of the output shows the `kind` picture of frame `from_index`; `filled` when that is a stand-in."""

    index: int
    kind: Kind
    from_index: int

    @property
    def filled(self) -> bool:
        return self.kind != "generated" or self.from_index != self.index


class FillRefused(Exception):
    """Raised by plan_fill when the policy is `fail` and a frame was not painted."""


def plan_fill(painted: Sequence[bool], policy: str) -> list[Slot]:
    """One Slot per frame. `painted[i]` says whether frame i has a generated picture."""
    if policy not in ("hold", "source", "fail"):
        raise ValueError(f"unknown fill policy {policy!r}")
    missing = [i for i, ok in enumerate(painted) if not ok]
    if missing and policy == "fail":
        raise FillRefused(f"{len(missing)} frame(s) could not be painted (first: frame {missing[0]})")
    slots: list[Slot] = []
    last: int | None = None
    first_painted = next((i for i, ok in enumerate(painted) if ok), None)
    for i, ok in enumerate(painted):
        if ok:
            last = i
            slots.append(Slot(i, "generated", i))
        elif policy == "hold" and (last is not None or first_painted is not None):
            slots.append(Slot(i, "generated", last if last is not None else first_painted))  # type: ignore[arg-type]  # one is set: see the elif
        else:
            slots.append(Slot(i, "source", i))
    return slots

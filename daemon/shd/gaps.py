"""PURE: the gaps between consecutive paintings with `output.transition = "film"`: which become pairs, and what the
video shows in each.

Gap i lies between frame i and frame i + 1. It becomes a pair (one paid FILM prediction) as soon as both frames are
painted (`ready`), whatever the others are doing. At assembly (`plan`) each gap shows FILM's pictures when its pair
was interpolated and both slots show their own paintings; otherwise a crossfade made locally stands in, and says
why: the pair failed (its error), was not interpolated, or a frame of it was not painted (fill.py filled its slot;
a slot held from its neighbour shows the same picture on both sides, and its crossfade is a hold). The last frame
has no gap: it is held to the end of the video.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from shd.fill import Slot

CROSSFADE = "crossfade"  # what a gap shows instead of FILM's pictures (recorded as the pair's filled_with)


@dataclass(frozen=True)
class Gap:
    """What the video shows between slot `index` and slot `index` + 1."""

    index: int
    film: bool                # FILM's pictures; else a crossfade
    why: str | None = None    # why a crossfade stands in
    blend: bool = True        # the two slots show different pictures (a crossfade of one picture is a hold)


def ready(painted: Sequence[bool]) -> list[int]:
    """The gaps whose two frames are painted: `painted[i]` says whether frame i is."""
    return [i for i in range(len(painted) - 1) if painted[i] and painted[i + 1]]


def plan(slots: Sequence[Slot], interpolated: Collection[int], errors: Mapping[int, str | None]) -> list[Gap]:
    """One Gap per pair of consecutive slots. `interpolated`: the gaps whose pair FILM interpolated; `errors`: why
    a pair failed, by gap."""
    out = []
    for a, b in zip(slots, slots[1:]):
        i = a.index
        blend = (a.kind, a.from_index) != (b.kind, b.from_index)
        if a.filled or b.filled:
            unpainted = a.index if a.filled else b.index
            out.append(Gap(i, False, f"frame {unpainted} was not painted", blend))
        elif i in interpolated:
            out.append(Gap(i, True))
        else:
            out.append(Gap(i, False, errors.get(i) or "not interpolated", blend))
    return out

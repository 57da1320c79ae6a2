"""Why no task is handed out: every reason to hold work (the auth pause, the API outage, the budget) as one gate
for the dispatcher, and one answer for everyone who shows it.

Each hold is a gate with a `kind` ("auth", "unreachable", "budget"), the reason it holds work (`paused`, None while
it does not) and when that began (`since`). `Holds.current()` lists the holds in force; `Holds.paused` joins their
reasons into the one string that `shd status`, systemd's STATUS=, the web page and the `daemon.paused` hook show.
The budget's hold (scheduler/budget_gate.py) never closes the gate itself: it holds each create as it is asked for,
so a task that resumes a prediction already paid for still goes on; it is here for its reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class Hold(Protocol):
    kind: str

    @property
    def paused(self) -> str | None:
        """Why work is held now, or None."""

    @property
    def since(self) -> float | None:
        """When the hold began (epoch seconds), or None."""

    def hold(self, now: float) -> float | None:
        """None while tasks may be handed out; else how many seconds to hold them before asking again."""


@dataclass(frozen=True)
class Paused:
    """One hold in force."""

    kind: str
    reason: str
    since: float | None


class Holds:
    """All holds as one dispatcher gate. Thread-safe as its holds are."""

    def __init__(self, holds: Iterable[Hold]):
        self._holds = list(holds)

    def hold(self, now: float) -> float | None:
        """The first hold in force decides (later ones are not asked, so an outage's probe is not spent while the
        credentials are refused)."""
        for h in self._holds:
            wait = h.hold(now)
            if wait is not None:
                return wait
        return None

    def current(self) -> list[Paused]:
        found = []
        for h in self._holds:
            why = h.paused
            if why is not None:
                found.append(Paused(h.kind, why, h.since))
        return found

    @property
    def paused(self) -> str | None:
        reasons = [p.reason for p in self.current()]
        return "; ".join(reasons) if reasons else None

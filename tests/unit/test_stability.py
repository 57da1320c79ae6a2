"""The stability gate alone: pure, time passed in as plain numbers, no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from shd.stability import StabilityGate
from shd.watcher import is_ignored

A = Path("/inbox/a.mp4")
B = Path("/inbox/b.mp4")


def sig(size: int, mtime: int = 1, inode: int = 7) -> tuple[int, int, int]:
    return (size, mtime, inode)


def test_stable_after_window_with_two_samples() -> None:
    """The same non-zero signature in 2 samples spanning stable_seconds makes a candidate ready, once."""
    gate = StabilityGate(10)
    gate.candidate(A)
    gate.observe(A, sig(100), now=0)
    assert gate.ready(now=0) == []
    gate.observe(A, sig(100), now=9.9)
    assert gate.ready(now=9.9) == []
    gate.observe(A, sig(100), now=10)
    assert gate.ready(now=10) == [A]
    assert gate.ready(now=10) == []  # returned once
    assert gate.pending() == []


def test_one_sample_is_never_enough() -> None:
    """However long ago the only sample was taken, a second identical one is required."""
    gate = StabilityGate(1)
    gate.candidate(A)
    gate.observe(A, sig(100), now=0)
    assert gate.ready(now=1000) == []
    assert gate.next_check_in(now=1000) == 0


def test_slow_growth_is_never_ready() -> None:
    """A file that grows at every sample never becomes ready, however long the copy takes."""
    gate = StabilityGate(5)
    gate.candidate(A)
    for t in range(0, 600, 3):
        gate.observe(A, sig(1000 + t, mtime=t), now=t)
        assert gate.ready(now=t) == []
    assert gate.pending() == [A]


@pytest.mark.parametrize("changed", [sig(200), sig(100, mtime=2), sig(100, inode=8)], ids=["size", "mtime", "inode"])
def test_any_signature_change_restarts_the_clock(changed: tuple[int, int, int]) -> None:
    """Size, mtime or inode changing (a rewrite, a replace-by-rename) restarts the window from that sample."""
    gate = StabilityGate(10)
    gate.candidate(A)
    gate.observe(A, sig(100), now=0)
    gate.observe(A, changed, now=8)
    gate.observe(A, changed, now=12)
    assert gate.ready(now=12) == []  # only 4 s since the change
    assert gate.next_check_in(now=12) == pytest.approx(6)
    gate.observe(A, changed, now=18)
    assert gate.ready(now=18) == [A]


def test_zero_size_waits_longer_and_content_follows_the_normal_rule() -> None:
    """An empty file (a copy that has not written yet) is not ready within the normal window; once it has
    content it follows the normal rule."""
    gate = StabilityGate(2)
    gate.candidate(A)
    for t in range(0, 6, 2):
        gate.observe(A, sig(0), now=t)
        assert gate.ready(now=t) == []
    assert gate.pending() == [A]
    assert gate.next_check_in(now=4) == pytest.approx(2)
    gate.observe(A, sig(50, mtime=2), now=6)
    gate.observe(A, sig(50, mtime=2), now=8)
    assert gate.ready(now=8) == [A]


def test_a_file_that_stays_empty_is_ready_after_the_longer_window() -> None:
    """So an empty drop is moved aside with its reason instead of sitting in the inbox for ever."""
    gate = StabilityGate(2)
    gate.candidate(A)
    for t in range(0, 8, 2):
        gate.observe(A, sig(0), now=t)
        assert gate.ready(now=t) == []
    gate.observe(A, sig(0), now=8)
    assert gate.ready(now=8) == [A]


def test_vanished_is_dropped() -> None:
    """A None signature (the file is gone) drops the candidate; later samples for it are ignored."""
    gate = StabilityGate(1)
    gate.candidate(A)
    gate.observe(A, sig(100), now=0)
    gate.observe(A, None, now=1)
    assert A not in gate
    gate.observe(A, sig(100), now=2)
    gate.observe(A, sig(100), now=5)
    assert gate.ready(now=5) == []
    assert gate.next_check_in(now=5) is None


def test_hint_wakes_the_check_but_does_not_shorten_the_window() -> None:
    """A close/moved hint makes the candidate due now and blocks readiness until a sample after it; it never
    makes a file ready with fewer than 2 identical samples spanning the window."""
    gate = StabilityGate(10)
    gate.hinted(A, now=0)  # a hint for an unknown path makes it a candidate
    assert gate.pending() == [A]
    assert gate.next_check_in(now=0) == 0
    gate.observe(A, sig(100), now=0)
    assert gate.ready(now=0) == []
    assert gate.next_check_in(now=0) == pytest.approx(10)
    gate.observe(A, sig(100), now=10)
    gate.hinted(A, now=10)  # the writer touched it again after our sample
    assert gate.ready(now=10) == []
    assert gate.next_check_in(now=10) == 0
    gate.observe(A, sig(100), now=10.5)
    assert gate.ready(now=10.5) == [A]


def test_stale_sample_needs_a_fresh_one() -> None:
    """Readiness is judged on a recent sample: an old pair of identical samples asks for a new stat first."""
    gate = StabilityGate(5)
    gate.candidate(A)
    gate.observe(A, sig(100), now=0)
    gate.observe(A, sig(100), now=5)
    assert gate.ready(now=60) == []
    assert gate.next_check_in(now=60) == 0
    gate.observe(A, sig(100), now=60)
    assert gate.ready(now=60) == [A]


def test_next_check_in_is_the_earliest_candidate() -> None:
    """next_check_in: None without candidates, 0 for one never sampled, else the earliest window end."""
    gate = StabilityGate(10)
    assert gate.next_check_in(now=0) is None
    gate.candidate(A)
    assert gate.next_check_in(now=0) == 0
    gate.observe(A, sig(100), now=0)
    gate.candidate(B)
    gate.observe(B, sig(100), now=4)
    assert gate.next_check_in(now=5) == pytest.approx(5)


def test_forget_and_recandidate() -> None:
    """forget() stops tracking; candidate() is idempotent and does not reset a running clock."""
    gate = StabilityGate(10)
    gate.candidate(A)
    gate.observe(A, sig(100), now=0)
    gate.candidate(A)
    gate.observe(A, sig(100), now=10)
    assert gate.ready(now=10) == [A]
    gate.candidate(B)
    gate.forget(B)
    gate.forget(B)
    assert gate.pending() == []


def test_zero_window_still_needs_two_samples() -> None:
    """stable_seconds=0 still requires 2 identical samples; negative windows are refused."""
    gate = StabilityGate(0)
    gate.candidate(A)
    gate.observe(A, sig(1), now=0)
    assert gate.ready(now=0) == []
    gate.observe(A, sig(1), now=0)
    assert gate.ready(now=0) == [A]
    with pytest.raises(ValueError):
        StabilityGate(-1)


@pytest.mark.parametrize(
    "name",
    [".hidden.mp4", "~lock.mp4", "a.part", "a.mp4.PART", "a.tmp", "a.crdownload", "a.Partial", ".", ""],
)
def test_ignored_names(name: str) -> None:
    """Hidden, ~ and in-progress download/copy names are never candidates (suffixes case-insensitive)."""
    assert is_ignored(name)


@pytest.mark.parametrize("name", ["a.mp4", "A.MOV", "part.mp4", "a.tmp.mp4", "x~.mkv"])
def test_regular_names(name: str) -> None:
    """Ordinary video names pass, even when an ignored word appears elsewhere in them."""
    assert not is_ignored(name)

"""InboxWatcher on real files, with the real inotify and polling observers.

Tests drive the watcher the way the daemon's main loop does (`poll()`, then wait on `wakeup` for `next_check_in()`)
and wait with deadlines, never with sleeps; the only sleeps are the pauses of a deliberately slow writer.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.events import FileCreatedEvent

from shd.errors import ConfigError
from shd.watcher import InboxWatcher, _InboxHandler

STABLE = 0.4
DEADLINE = 15.0


@pytest.fixture(params=["inotify", "polling"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def make_watcher(inbox: Path, kind: str) -> Iterator[Callable[..., InboxWatcher]]:
    made: list[InboxWatcher] = []

    def make(**kwargs: object) -> InboxWatcher:
        opts: dict[str, object] = {"stable_seconds": STABLE, "polling": kind == "polling", "poll_interval": 0.1}
        opts.update(kwargs)
        w = InboxWatcher(inbox, **opts)  # type: ignore[arg-type]  # each test's options
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def run_loop(
    watcher: InboxWatcher, until: Callable[[list[Path]], bool], deadline: float = DEADLINE
) -> list[tuple[float, Path]]:
    """The daemon's main loop in miniature: returns (monotonic time, path) for everything poll() returned, once
    `until(paths so far)` holds; fails the test at the deadline."""
    seen: list[tuple[float, Path]] = []
    end = time.monotonic() + deadline
    while True:
        now = time.monotonic()
        seen += [(now, p) for p in watcher.poll(now)]
        if until([p for _, p in seen]):
            return seen
        remaining = end - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"deadline passed; got {seen}, pending {watcher.gate.pending()}")
        wait = watcher.next_check_in()
        watcher.wakeup.wait(remaining if wait is None else min(wait, remaining))


def write(path: Path, data: bytes = b"x" * 1000) -> Path:
    path.write_bytes(data)
    return path


def test_slow_copy_is_returned_only_after_writes_stop(make_watcher: Callable[..., InboxWatcher], inbox: Path) -> None:
    """A file written in chunks with pauses shorter than the window is returned once, complete, and no earlier
    than stable_seconds after its last write."""
    w = make_watcher()
    w.start()
    target = inbox / "slow.mp4"
    chunks, chunk = 12, b"v" * 4096
    last_write: list[float] = []

    def writer() -> None:
        with open(target, "wb") as f:
            for _ in range(chunks):
                # stamped before the write: the final signature cannot be sampled before this instant
                last_write[:] = [time.monotonic()]
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
                time.sleep(STABLE / 4)  # the writer's pace is the test's input

    t = threading.Thread(target=writer)
    t.start()
    try:
        seen = run_loop(w, lambda paths: target in paths)
    finally:
        t.join()
    assert [p for _, p in seen] == [target]
    returned_at = seen[0][0]
    assert returned_at >= last_write[0] + STABLE
    assert target.stat().st_size == chunks * len(chunk)


def test_files_present_before_start_are_found(make_watcher: Callable[..., InboxWatcher], inbox: Path) -> None:
    """start() scans the inbox: files that arrived while the daemon was down become candidates."""
    a, b = write(inbox / "a.mp4"), write(inbox / "b.mov")
    w = make_watcher()
    w.start()
    seen = run_loop(w, lambda paths: {a, b} <= set(paths))
    assert sorted(p for _, p in seen) == [a, b]


def test_part_file_ignored_until_renamed(make_watcher: Callable[..., InboxWatcher], inbox: Path) -> None:
    """A `.part` file is never a candidate; renaming it to its final name makes the new name one."""
    w = make_watcher()
    w.start()
    part = write(inbox / "movie.mp4.part")
    control = write(inbox / "control.mp4")  # written after: once it is ready, the .part had every chance
    seen = run_loop(w, lambda paths: control in paths)
    assert [p for _, p in seen] == [control]
    assert part not in w.gate.pending()
    final = inbox / "movie.mp4"
    part.rename(final)
    seen = run_loop(w, lambda paths: final in paths)
    assert [p for _, p in seen] == [final]


def test_hidden_files_and_subfolders_ignored(make_watcher: Callable[..., InboxWatcher], inbox: Path) -> None:
    """Hidden, `~`, temp names, subfolders and files inside subfolders never come out of the watcher."""
    w = make_watcher()
    w.start()
    write(inbox / ".hidden.mp4")
    write(inbox / "~lock.mp4")
    write(inbox / "x.crdownload")
    write(inbox / "y.TMP")
    sub = inbox / "sub"
    sub.mkdir()
    write(sub / "inside.mp4")
    control = write(inbox / "control.mp4")
    seen = run_loop(w, lambda paths: control in paths)
    assert [p for _, p in seen] == [control]
    assert w.gate.pending() == []
    assert w.rescan() == [control]  # the scan applies the same rules (control was not claimed)


def test_rescan_finds_a_file_that_produced_no_event(inbox: Path) -> None:
    """With a poller that will not look again for an hour, a new file makes no event; rescan() finds it."""
    w = InboxWatcher(inbox, stable_seconds=STABLE, polling=True, poll_interval=3600)
    w.start()
    try:
        missed = write(inbox / "missed.mp4")
        assert w.poll() == []
        assert w.next_check_in() is None  # nothing known: the loop would wait for an event forever
        assert w.rescan() == [missed]
        seen = run_loop(w, lambda paths: missed in paths)
        assert [p for _, p in seen] == [missed]
    finally:
        w.stop()


def test_observer_death_then_restart(make_watcher: Callable[..., InboxWatcher], inbox: Path) -> None:
    """When the observer thread dies, is_alive() says so; restart() recovers files that arrived meanwhile and
    events flow again."""
    w = make_watcher()
    w.start()
    assert w.is_alive()
    observer = w._observer  # simulate a silent death (watchdog #663, #829) behind the watcher's back
    assert observer is not None
    observer.stop()
    observer.join(timeout=10)
    assert not w.is_alive()

    during = write(inbox / "during.mp4")
    w.restart()
    assert w.is_alive()
    assert w._observer is not observer
    seen = run_loop(w, lambda paths: during in paths)
    assert [p for _, p in seen] == [during]

    after = write(inbox / "after.mp4")
    seen = run_loop(w, lambda paths: after in paths)
    assert [p for _, p in seen] == [after]


def test_returned_once_and_recandidate(make_watcher: Callable[..., InboxWatcher], inbox: Path) -> None:
    """A ready file is returned once; the caller can ask for it to be checked again with candidate()."""
    w = make_watcher()
    w.start()
    a = write(inbox / "a.mp4")
    run_loop(w, lambda paths: a in paths)
    assert w.poll() == []
    w.candidate(a)
    seen = run_loop(w, lambda paths: a in paths)
    assert [p for _, p in seen] == [a]


def test_vanished_candidate_is_dropped(make_watcher: Callable[..., InboxWatcher], inbox: Path) -> None:
    """A file deleted before it settles is dropped, not returned."""
    w = make_watcher()
    w.start()
    gone = write(inbox / "gone.mp4")
    control = write(inbox / "control.mp4")
    gone.unlink()
    seen = run_loop(w, lambda paths: control in paths)
    assert [p for _, p in seen] == [control]
    assert w.gate.pending() == []


def test_start_refuses_missing_or_non_folder_inbox(tmp_path: Path) -> None:
    """start() raises ConfigError naming the inbox when it does not exist or is a file."""
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as err:
        InboxWatcher(missing, stable_seconds=STABLE).start()
    assert str(missing) in str(err.value)
    a_file = write(tmp_path / "file")
    with pytest.raises(ConfigError) as err:
        InboxWatcher(a_file, stable_seconds=STABLE, polling=True).start()
    assert str(a_file) in str(err.value)


def test_handler_never_raises(inbox: Path) -> None:
    """An error inside the handler is logged and swallowed, so it cannot kill watchdog's dispatch thread."""

    class BrokenQueue(queue.SimpleQueue):  # type: ignore[type-arg]  # of anything
        def put(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("queue is broken")

    wakeup = threading.Event()
    handler = _InboxHandler(os.path.abspath(inbox), BrokenQueue(), wakeup)
    handler.dispatch(FileCreatedEvent(str(inbox / "a.mp4")))  # must not raise
    assert not wakeup.is_set()

"""What WATCHDOG=1 vouches for: the scheduler's dispatcher goes round its loop, not merely that its thread exists."""

from __future__ import annotations

from pathlib import Path

from shd import config
from shd.scheduler import DISPATCH_DEADLINE, Engine
from shd.store import Store
from tests.e2e.harness import wait_for


def test_a_wedged_dispatcher_is_not_healthy_and_is_again_once_it_turns(tmp_path: Path) -> None:
    cfg = config.from_mapping({}, tmp_path / "shd.toml")
    store = Store.open(tmp_path / "state" / "shd.db")
    now = [1000.0]
    engine = Engine(cfg, store, None, None, None, clock=lambda: now[0])  # type: ignore[arg-type]
    engine.start()
    try:
        assert engine.healthy()
        with engine._cv:  # the dispatcher cannot go round while its lock is held: as if stuck
            now[0] += DISPATCH_DEADLINE + 1
            assert not engine.healthy()
            engine._cv.notify_all()
        wait_for("the dispatcher to go round again", engine.healthy, timeout=10)
    finally:
        engine.stop()
        store.close()

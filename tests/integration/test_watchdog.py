"""What WATCHDOG=1 vouches for: the scheduler's dispatcher goes round its loop, not merely that its thread exists."""

from __future__ import annotations

from pathlib import Path

from shd import config
from shd.backends import models
from shd.backends.memory import MemoryRemote, MemoryService
from shd.scheduler import Engine
from shd.scheduler.dispatch import TURN_DEADLINE
from shd.store import Store
from tests.e2e.harness import wait_for


def test_a_stuck_dispatcher_is_not_healthy_and_is_again_once_it_turns(tmp_path: Path) -> None:
    cfg = config.from_mapping({}, tmp_path / "shd.toml")
    store = Store.open(tmp_path / "state" / "shd.db")
    now = [1000.0]
    engine = Engine(cfg, store, models.backend(MemoryRemote(MemoryService()), cfg.replicate), clock=lambda: now[0])
    engine.start()
    try:
        assert engine.healthy()
        with engine.dispatch._cv:  # the dispatcher cannot go round while its lock is held: as if stuck
            now[0] += TURN_DEADLINE + 1
            assert not engine.healthy()
            engine.dispatch._cv.notify_all()
        wait_for("the dispatcher to go round again", engine.healthy, timeout=10)
    finally:
        engine.stop()
        store.close()

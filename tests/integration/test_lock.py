"""lock.py on real files and processes: one holder at a time, readable without the lock, gone with its holder."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from shd import children, lock


def test_one_holder_at_a_time_and_who_it_is_can_be_read_without_the_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, second = lock.StateLock(state), lock.StateLock(state)
    assert lock.holder(state) is None
    assert first.acquire("daemon")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / lock.LOCK_NAME).stat().st_mode) == 0o600
    held = lock.holder(state)
    assert held is not None and held.kind == "daemon" and held.pid > 0
    assert not second.acquire("process")
    first.release()
    assert lock.holder(state) is None  # emptied before it was let go
    assert second.acquire("process")
    assert lock.holder(state).kind == "process"
    second.release()


def test_the_lock_goes_with_its_holder_even_killed_and_no_child_keeps_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code = ("import sys, time; from pathlib import Path; from shd import children, lock\n"
            "assert lock.StateLock(Path(sys.argv[1])).acquire('daemon')\n"
            "with children.running(['sleep', '60']) as p:\n"
            "    print(p.pid, flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        assert not lock.StateLock(state).acquire("daemon")
        assert lock.holder(state).pid == holder.pid
        holder.kill()
        holder.wait()
        assert children._start_time(child) is not None  # its child outlives it...
        mine = lock.StateLock(state)
        assert mine.acquire("daemon")  # ...but does not hold the lock (the descriptor was not inherited)
        mine.release()
    finally:
        subprocess.run(["kill", "-9", str(child)], capture_output=True)

"""children.py with real processes: a clean environment, a process group of their own, stopped with shd, and found
and stopped after a shd that could not stop them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shd import children


def alive(pid: int) -> bool:
    return children._start_time(pid) is not None


def test_a_child_sees_no_credentials_and_runs_in_a_group_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_secret")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/shd.service")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    script = "import os, sys; print(sorted(os.environ)); print(os.getpgid(0) == os.getpid())"
    with children.running([sys.executable, "-c", script], stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=30)
    names, own_group = out.decode().splitlines()
    assert "REPLICATE_API_TOKEN" not in names and "CREDENTIALS_DIRECTORY" not in names
    assert "NOTIFY_SOCKET" not in names and "'LC_ALL'" in names and "'PATH'" in names
    assert own_group == "True"


def test_stop_all_kills_what_runs_and_the_waiting_thread_sees_it_end(tmp_path: Path) -> None:
    with children.running(["sleep", "60"], folder=tmp_path) as proc:
        assert (tmp_path / children.PIDFILE).read_text().split()[0] == str(proc.pid)
        assert children.stop_all() == 1
        assert proc.wait(timeout=5) == -9
    assert not (tmp_path / children.PIDFILE).exists()


def test_a_leftover_of_a_killed_shd_is_found_and_stopped_but_never_a_reused_pid(tmp_path: Path) -> None:
    # A "shd" that starts a child recording itself in the folder, and then dies by SIGKILL.
    code = ("import sys, time; from pathlib import Path; from shd import children\n"
            "with children.running(['sleep', '60'], folder=Path(sys.argv[1])) as p:\n"
            "    print(p.pid, flush=True); time.sleep(60)\n")
    shd = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert shd.stdout is not None
    pid = int(shd.stdout.readline())
    shd.kill()
    shd.wait()
    try:
        assert alive(pid)  # orphaned, still running
        assert children.stop_leftovers(tmp_path) == [pid]
        assert not alive(pid) and not (tmp_path / children.PIDFILE).exists()
    finally:
        if alive(pid):
            os.kill(pid, 9)
    # A record whose pid now belongs to another process (another start time) is not acted on.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / children.PIDFILE).write_text(f"{os.getpid()} 1\n")
    assert children.stop_leftovers(tmp_path) == [] and alive(os.getpid())
    assert not (tmp_path / "sub" / children.PIDFILE).exists()
    assert children.stop_leftovers(tmp_path) == []  # nothing recorded: nothing to do


def test_after_stop_all_for_good_nothing_new_starts() -> None:
    """What the daemon does on its way out: no child can start after it and outlive it."""
    code = ("from shd import children\n"
            "children.stop_all(for_good=True)\n"
            "try:\n"
            "    with children.running(['sleep', '60']):\n"
            "        print('started')\n"
            "except OSError as e:\n"
            "    print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "refused: [Errno 125] shd is stopping", r.stderr

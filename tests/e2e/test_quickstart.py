"""The README's Quickstart, verbatim, from a checkout: `shd process clip.mp4`, `shd run --config config/shd.toml`,
then `shd status` without a config finds what both did; and the checkout is left as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_shd
from tests.e2e.harness import wait_for
from tests.videos import make_video

pytestmark = pytest.mark.slow


def checkout_state() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_shd("status", *args, env=env, cwd=REPO)


def test_the_quickstart_works_verbatim_and_writes_nothing_into_the_checkout(
        tmp_path: Path, shd_env: dict[str, str]) -> None:
    if Path("/etc/shd/shd.toml").exists():
        pytest.skip("/etc/shd/shd.toml exists here: `shd status` without --config would read it")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(shd_env, HOME=str(home))  # a fresh user: no config anywhere, nothing from earlier runs
    before = checkout_state()
    clip = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)

    done = run_shd("process", str(clip), env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == home / "shd" / "outbox" / "clip.mp4"

    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "shd", "run", "--config", "config/shd.toml"], env=env,
                              cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for("`shd status --json` (no config) to see the daemon running",
                 lambda: status(env, "--json").returncode == 0
                 and json.loads(status(env, "--json").stdout)["daemon"]["running"], timeout=60)
        second = make_video(tmp_path / "second.mp4", seconds=1.0, size=(64, 48), audio=False)
        os.rename(second, home / "shd" / "inbox" / "second.mp4")

        def both_done() -> list[dict[str, object]] | None:
            found = json.loads(status(env, "--json").stdout)["jobs"]
            return found if len(found) == 2 and all(j["state"] == "done" for j in found) else None

        jobs = wait_for("both jobs done", both_done, timeout=90)
        assert sorted(j["source"] for j in jobs) == ["clip.mp4", "second.mp4"]
        table = status(env)
        assert table.returncode == 0 and table.stdout.startswith(f"daemon   running (pid {daemon.pid})")
        one = status(env, jobs[0]["id"])
        assert one.returncode == 0 and "state    done" in one.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
        log.close()
    assert (home / "shd" / "outbox" / "second.mp4").is_file()
    assert (home / ".local" / "state" / "shd" / "shd.db").is_file()
    assert checkout_state() == before

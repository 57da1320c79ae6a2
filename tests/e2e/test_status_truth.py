"""`shd status` tells the truth about who works: the daemon object of the contract, and the jobs of a daemon that
died shown as interrupted, their clocks stopped, instead of running on with an ETA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_shd
from tests.e2e.harness import Daemon, wait_for
from tests.standin import StandIn
from tests.videos import make_video

pytestmark = pytest.mark.slow


def status(cfg: Path, env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    r = run_shd("status", "--json", *args, "--config", str(cfg), env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_a_dead_daemons_jobs_are_interrupted_with_their_clocks_stopped(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    standin.override("stuck", model="stability-ai/sdxl")
    cfg = make_config({"pipeline": {"audio": "none"}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for("the pictures being painted", lambda: standin.count_creates("stability-ai/sdxl") == 2)
        live = status(cfg, shd_env, tmp_path)
        assert live["daemon"] == {"running": True, "pid": d.proc.pid, "paused": None}
        (job,) = live["jobs"]
        assert job["state"] == "running" and not job["interrupted"]
        d.kill()  # SIGKILL: its lock goes with it, its heartbeat stays behind, and says when it stopped
    dead = status(cfg, shd_env, tmp_path)
    assert dead["daemon"] == {"running": False, "pid": None, "paused": None}
    (job,) = dead["jobs"]
    assert job["state"] == "running" and job["interrupted"] and job["eta"] is None
    assert status(cfg, shd_env, tmp_path)["jobs"][0]["elapsed"] == job["elapsed"]  # not counting on
    table = run_shd("status", "--config", str(cfg), env=shd_env, cwd=tmp_path).stdout.splitlines()
    assert table[0].endswith("1 unfinished job(s) are interrupted: `shd run` resumes them")
    assert table[0].startswith("daemon   not running on ")
    assert "running (interrupted)" in table[2]
    one = run_shd("status", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path).stdout
    # A daemon's job: `shd process` on the same file would start a job of its own, not resume this one.
    assert "state    running (interrupted): nobody works on it; `shd run` resumes it\n" in one

"""An unreachable API, end to end against a running daemon: nothing fails and nothing counts as paid; every task
waits with one shared delay that grows while the outage lasts; `shd status`, `status --json`, systemd's STATUS=
and the `daemon.paused` hook all say "waiting for Replicate: unreachable since ..."; once the API answers the video
is made as if nothing happened."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from shd.store import Store
from tests.conftest import run_shd
from tests.e2e.harness import Daemon, Plug, status_json, wait_for
from tests.standin import StandIn
from tests.videos import make_video

pytestmark = pytest.mark.slow
REASON = "waiting for Replicate: unreachable since "


def test_an_unreachable_api_is_waited_out_shown_everywhere_and_spends_no_attempt(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    plug = Plug(int(standin.url.rsplit(":", 1)[1]))  # not pushed yet: connection refused
    env = dict(shd_env, REPLICATE_BASE_URL=plug.url)
    events = tmp_path / "events"
    script = 'echo "$SHD_EVENT|$SHD_REASON" >> ' + shlex.quote(str(events))
    hook = "sh -c " + shlex.quote(script)
    cfg = make_config({"replicate": {"max_attempts": 1, "inline_max_kb": 256, "backoff_base": 0.05,
                                     "backoff_max": 0.5},
                       "pipeline": {"audio": "none"}, "hooks": {"command": hook}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    with Daemon(cfg, env, tmp_path) as d:
        d.ready()
        first = d.wait_log("replicate_unreachable")
        assert "ConnectError" in first["error"]

        def probes() -> list[dict[str, float]]:
            return [json.loads(line) for line in d.lines if '"replicate_still_unreachable"' in line]

        tries = wait_for("three more failed tries, one probe at a time", lambda: probes()[2:] and probes())
        assert [t["tries"] for t in tries[:3]] == [2, 3, 4]
        assert first["retry_in"] <= 0.05 < 0.2 <= tries[2]["retry_in"] <= 0.4, (first, tries)  # it grows

        def status_doc() -> dict:
            return json.loads(run_shd("status", "--json", "--config", str(cfg), env=env, cwd=tmp_path).stdout)

        status = wait_for("status to say why (the heartbeat is written as the main loop turns, within a second)",
                          lambda: status_doc()["daemon"]["paused"] and status_doc())
        assert status["daemon"]["running"] and status["daemon"]["pid"] == d.proc.pid
        reason = status["daemon"]["paused"]
        assert reason.startswith(REASON) and "(last error: network error: ConnectError" in reason
        table = run_shd("status", "--config", str(cfg), env=env, cwd=tmp_path).stdout
        assert table.splitlines()[0] == f"daemon   running (pid {d.proc.pid}); paused: {reason}"
        assert f"PAUSED: {reason}" in d.wait_message(REASON)
        wait_for("the daemon.paused hook", lambda: events.exists() and events.read_text())
        assert events.read_text().splitlines()[0] == f"daemon.paused|{reason}"
        (job,) = status["jobs"]
        assert job["frames"]["failed"] == 0

        plug.push()
        try:
            d.wait_log("replicate_reachable_again")
            (job,) = wait_for("the job done", lambda: [j for j in status_json(cfg, env, tmp_path)
                                                       if j["state"] == "done"], timeout=60)
        finally:
            plug.pull()
        wait_for("the daemon.resumed hook", lambda: "daemon.resumed|" in events.read_text())
    assert job["frames"] == {"total": 2, "extracted": 2, "prompted": 2, "generated": 2, "failed": 0}
    ledger = Store.open_readonly(tmp_path / "state" / "shd.db").predictions()
    assert {p.status for p in ledger} == {"refused", "succeeded"}  # the refused ones never reached the server
    assert standin.count_creates() == 4
    detail = json.loads(run_shd("status", job["id"], "--json", "--config", str(cfg), env=env, cwd=tmp_path).stdout)
    paid = detail["jobs"][0]["predictions"]
    assert paid["by_status"] == {"succeeded": 4} and paid["refused"] == len(ledger) - 4

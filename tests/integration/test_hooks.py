"""Hooks for real: a command run as a process and a webhook POSTed to an HTTP server on loopback. The payloads
arrive as documented (signature verified), failures are retried or logged, a hook that hangs is killed with
everything it started, and `send()` never waits for any of it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from shd import hooks
from shd.config import Hooks
from tests.e2e.harness import wait_for
from tests.webhooks import WebhookReceiver as Receiver

SUMMARY = {"id": "job42", "source": "clip.mp4", "state": "done", "output": "/srv/shd/outbox/clip.mp4",
           "error": None, "frames": {"total": 2, "extracted": 2, "prompted": 2, "generated": 2, "failed": 0}}


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


def event_logged(logs: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((e for e in list(logs) if e["event"] == name), None)


def script(tmp_path: Path, body: str) -> str:
    """A hook command line: this Python running `body` (a file, so the command line stays simple)."""
    p = tmp_path / "hook.py"
    p.write_text(body)
    return f"{sys.executable} {p}"


def test_a_command_and_a_webhook_receive_the_documented_facts(tmp_path: Path, captured: list) -> None:
    """The command sees SHD_* variables and no token; the webhook gets the JSON body, signed with the secret."""
    receiver = Receiver()
    out = tmp_path / "env.json"
    cmd = script(tmp_path, f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))")
    h = hooks.Hooks(Hooks(command=cmd, webhook=receiver.url), b"s3cret",
                    environ={"PATH": os.environ["PATH"], "REPLICATE_API_TOKEN": "r8_tok", "KEEP": "me"},
                    secrets=("r8_tok",))
    h.start()
    try:
        h.send(hooks.job_event(SUMMARY))
        env = json.loads(wait_for("the command's environment", lambda: out.exists() and out.read_text()))
        assert (env["SHD_EVENT"], env["SHD_JOB_ID"], env["SHD_JOB_STATE"], env["SHD_SOURCE"], env["SHD_OUTPUT"],
                env["SHD_REASON"], env["SHD_COST_USD"]) == ("job.done", "job42", "done", "clip.mp4",
                                                            "/srv/shd/outbox/clip.mp4", "", "")
        assert env["KEEP"] == "me" and "REPLICATE_API_TOKEN" not in env
        assert not any("r8_tok" in v for v in env.values())
        wait_for("the webhook", lambda: receiver.requests)
        headers, body = receiver.requests[0]
        doc = json.loads(body)
        assert doc["event"] == "job.done" and doc["job_id"] == "job42" and doc["output"] == SUMMARY["output"]
        assert doc == json.loads(env["SHD_PAYLOAD"]) | {"time": doc["time"]}
        assert headers["Content-Type"] == "application/json" and headers["X-Shd-Event"] == "job.done"
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Shd-Signature-256"], expected)
        wait_for("both hooks logged", lambda: len([e for e in captured if e["event"] == "hook_ran"]) == 2)
    finally:
        h.stop()
        receiver.close()


def test_a_webhook_is_retried_with_backoff_under_one_delivery_id(captured: list) -> None:
    receiver = Receiver(statuses=[500, 503, 429])
    h = hooks.Hooks(Hooks(webhook=receiver.url, retries=3), None, retry_base=0.01)
    h.start()
    try:
        h.send(hooks.job_event(SUMMARY))
        wait_for("the fourth attempt accepted", lambda: event_logged(captured, "hook_ran"))
        assert len(receiver.requests) == 4
        assert len({r[0]["X-Shd-Delivery"] for r in receiver.requests}) == 1
        assert "X-Shd-Signature-256" not in receiver.requests[0][0]  # no secret: unsigned, and said so
        assert event_logged(captured, "webhook_unsigned") is not None
        assert [e["error"] for e in captured if e["event"] == "hook_retrying"] == ["HTTP 500", "HTTP 503",
                                                                                    "HTTP 429"]
    finally:
        h.stop()
        receiver.close()


def test_a_webhook_that_keeps_failing_is_logged_and_given_up(captured: list) -> None:
    receiver = Receiver(statuses=[400])
    h = hooks.Hooks(Hooks(webhook=receiver.url, retries=5), b"k", retry_base=0.01)
    h.start()
    try:
        h.send(hooks.job_event(SUMMARY))
        failed = wait_for("a 400 given up at once", lambda: event_logged(captured, "hook_failed"))
        assert failed["error"] == "HTTP 400" and failed["attempts"] == 1 and len(receiver.requests) == 1
    finally:
        h.stop()
        receiver.close()
    captured.clear()
    unreachable = hooks.Hooks(Hooks(webhook=receiver.url, retries=2, timeout=2), b"k", retry_base=0.01)
    unreachable.start()  # the receiver is closed: connection refused
    try:
        unreachable.send(hooks.job_event(SUMMARY))
        failed = wait_for("an unreachable webhook given up", lambda: event_logged(captured, "hook_failed"))
        assert failed["attempts"] == 3 and "ConnectError" in failed["error"]
    finally:
        unreachable.stop()


def test_a_failing_command_is_logged_with_its_exit_code_and_stderr(tmp_path: Path, captured: list) -> None:
    cmd = script(tmp_path, "import sys; print('notify-send: no display', file=sys.stderr); sys.exit(3)")
    h = hooks.Hooks(Hooks(command=cmd), None)
    h.start()
    try:
        h.send(hooks.job_event(SUMMARY))
        failed = wait_for("the failure logged", lambda: event_logged(captured, "hook_failed"))
        assert failed["exit_code"] == 3 and failed["stderr"] == "notify-send: no display"
        assert failed["job"] == "job42" and failed["hook_event"] == "job.done"
    finally:
        h.stop()
    h = hooks.Hooks(Hooks(command="/nonexistent/notify"), None)
    h.start()
    try:
        captured.clear()
        h.send(hooks.job_event(SUMMARY))
        failed = wait_for("a missing command logged", lambda: event_logged(captured, "hook_failed"))
        assert "/nonexistent/notify" in failed["error"]
    finally:
        h.stop()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_hanging_command_is_killed_with_what_it_started_and_send_never_waits(tmp_path: Path,
                                                                              captured: list) -> None:
    """The command starts a child and hangs; `send()` returns at once while it runs; after `timeout` both are
    killed and the next event is handled."""
    pids = tmp_path / "pids"
    cmd = script(tmp_path, f"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open({str(pids)!r}, "a").write(f"{{os.getpid()}} {{child.pid}} {{os.environ['SHD_EVENT']}}\\n")
time.sleep(120)
""")
    h = hooks.Hooks(Hooks(command=cmd, timeout=1.0), None)
    h.start()
    try:
        h.send(hooks.job_event(SUMMARY))
        h.send(hooks.job_event({**SUMMARY, "state": "failed", "error": "bad"}))
        assert event_logged(captured, "hook_timed_out") is None  # send() returned while the hook still runs
        first = wait_for("the first command started", lambda: pids.exists() and pids.read_text().splitlines())
        wait_for("the timeout logged", lambda: event_logged(captured, "hook_timed_out"))
        hook_pid, child_pid, event = first[0].split()
        assert event == "job.done"
        wait_for("the command and its child killed", lambda: not _running(int(hook_pid))
                 and not _running(int(child_pid)), timeout=10)
        second = wait_for("the next event's command", lambda: len(pids.read_text().splitlines()) == 2
                          and pids.read_text().splitlines()[1])
        assert second.endswith("job.failed")
    finally:
        h.stop(grace=0.1)
    for line in pids.read_text().splitlines():
        for pid in map(int, line.split()[:2]):
            if _running(pid):
                os.kill(pid, 9)


def test_stop_does_not_wait_for_a_hanging_webhook(captured: list) -> None:
    receiver = Receiver(hold=True)
    h = hooks.Hooks(Hooks(webhook=receiver.url, timeout=30), None)
    h.start()
    try:
        h.send(hooks.job_event(SUMMARY))
        wait_for("the webhook hanging", lambda: receiver.requests)
        h.send(hooks.job_event({**SUMMARY, "id": "job43"}))
        t0 = time.monotonic()
        h.stop(grace=0.2)
        assert time.monotonic() - t0 < 2
        dropped = event_logged(captured, "hook_dropped_at_stop")
        assert dropped is not None and dropped["job"] == "job43"
    finally:
        receiver.close()

"""Hooks, the pure parts: the facts each event carries, the webhook body and its signature, the command's
environment (never the token), and pause changes turned into events."""

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from shd import hooks
from shd.config import Hooks
from shd.errors import ConfigError

SUMMARY = {"id": "abc123", "source": "clip.mp4", "state": "done", "output": "/srv/shd/outbox/clip.mp4",
           "error": None, "frames": {"total": 3, "extracted": 3, "prompted": 3, "generated": 3, "failed": 0},
           "filled": 0, "elapsed": 12.5, "eta": None}


def test_a_finished_job_becomes_an_event_with_its_facts() -> None:
    e = hooks.job_event(SUMMARY, at=1_800_000_000.25)
    assert (e.event, e.job_id, e.state, e.source, e.output, e.reason, e.cost) == (
        "job.done", "abc123", "done", "clip.mp4", "/srv/shd/outbox/clip.mp4", None, None)
    failed = hooks.job_event({**SUMMARY, "state": "failed", "output": None, "error": "clip.mp4: no video stream",
                              "cost": {"usd": 0.12, "predict_seconds": 40.0, "predictions": 6, "reused": 0}})
    assert failed.event == "job.failed" and failed.reason == "clip.mp4: no video stream"
    assert failed.cost is not None and failed.cost["usd"] == 0.12


def test_the_webhook_body_is_the_documented_json_and_its_signature_an_hmac_of_it() -> None:
    body = hooks.payload(hooks.job_event(SUMMARY, at=1_800_000_000.25))
    assert json.loads(body) == {"event": "job.done", "time": "2027-01-15T08:00:00.250000Z", "job_id": "abc123",
                                "state": "done", "source": "clip.mp4", "output": "/srv/shd/outbox/clip.mp4",
                                "reason": None, "cost": None, "frames": SUMMARY["frames"]}
    sig = hooks.signature(b"s3cret", body)
    assert sig == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hooks.signature(b"other", body) != sig


def test_the_command_gets_the_facts_and_never_the_token() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/x", "REPLICATE_API_TOKEN": "r8_secret",
            "CREDENTIALS_DIRECTORY": "/run/credentials/shd.service", "NOTIFY_SOCKET": "/run/systemd/notify",
            "MY_COPY": "token is r8_secret"}
    e = hooks.job_event({**SUMMARY, "cost": {"usd": 0.5}})
    env = hooks.command_env(e, base, secrets=("r8_secret",))
    assert not any("r8_secret" in v for v in env.values())
    assert "CREDENTIALS_DIRECTORY" not in env and "NOTIFY_SOCKET" not in env
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/x"
    assert (env["SHD_EVENT"], env["SHD_JOB_ID"], env["SHD_JOB_STATE"], env["SHD_SOURCE"], env["SHD_OUTPUT"],
            env["SHD_REASON"], env["SHD_COST_USD"]) == ("job.done", "abc123", "done", "clip.mp4",
                                                        "/srv/shd/outbox/clip.mp4", "", "0.5")
    assert json.loads(env["SHD_PAYLOAD"])["job_id"] == "abc123"
    for usd, text in ((7.2e-05, "0.000072"), (0.0, "0"), (12.0, "12"), (1.23456789, "1.234568")):
        assert hooks.command_env(hooks.job_event({**SUMMARY, "cost": {"usd": usd}}), base)["SHD_COST_USD"] == text


def test_pause_changes_become_paused_and_resumed_events_once_each() -> None:
    w = hooks.PauseWatch()
    assert w.observe(None, 1.0) is None
    paused = w.observe("Replicate refused the token (401)", 2.0)
    assert paused is not None and (paused.event, paused.reason, paused.job_id) == (
        "daemon.paused", "Replicate refused the token (401)", None)
    assert w.observe("Replicate refused the token (401)", 3.0) is None
    changed = w.observe("budget reached", 4.0)
    assert changed is not None and changed.event == "daemon.paused" and changed.reason == "budget reached"
    resumed = w.observe(None, 5.0)
    assert resumed is not None and (resumed.event, resumed.reason) == ("daemon.resumed", "budget reached")
    env = hooks.command_env(paused, {})
    assert env["SHD_EVENT"] == "daemon.paused" and env["SHD_JOB_ID"] == "" and env["SHD_OUTPUT"] == ""


def test_the_secret_comes_from_the_credential_then_the_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    cfg = Hooks(webhook="http://127.0.0.1:1/", secret_file=secret_file)
    assert hooks.read_secret(cfg, {}) == b"from-file"
    (creds / "webhook_secret").write_text("from-credential\n")
    assert hooks.read_secret(cfg, {"CREDENTIALS_DIRECTORY": str(creds)}) == b"from-credential"
    assert hooks.read_secret(Hooks(webhook="http://x/"), {}) is None
    with pytest.raises(ConfigError, match="hooks.secret_file cannot be read"):
        hooks.read_secret(Hooks(webhook="http://x/", secret_file=tmp_path / "missing"), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="hooks.secret_file is empty"):
        hooks.read_secret(Hooks(webhook="http://x/", secret_file=tmp_path / "empty"), {})

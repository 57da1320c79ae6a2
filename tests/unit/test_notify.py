"""The notify protocol against a real unix datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from shd.notify import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound SOCK_DGRAM socket in tmp_path, as $NOTIFY_SOCKET would name it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield str(path), sock
    finally:
        sock.close()


def recv(sock: socket.socket) -> str:
    return sock.recv(65536).decode()


def test_messages_arrive_exactly(manager: tuple[str, socket.socket]) -> None:
    """Each helper sends exactly its sd_notify assignments, one datagram per call, in order."""
    path, sock = manager
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready()
    assert recv(sock) == "READY=1"
    assert n.ready(status="watching")
    assert recv(sock) == "READY=1\nSTATUS=watching"
    assert n.status("3 jobs, 412/1200 frames")
    assert recv(sock) == "STATUS=3 jobs, 412/1200 frames"
    assert n.watchdog()
    assert recv(sock) == "WATCHDOG=1"
    assert n.stopping()
    assert recv(sock) == "STOPPING=1"
    assert n.extend_timeout(2.5)
    assert recv(sock) == "EXTEND_TIMEOUT_USEC=2500000"
    assert n.send_raw("READY=1\nSTATUS=raw")
    assert recv(sock) == "READY=1\nSTATUS=raw"
    assert n.send(status="a\nb", errno=5)
    assert recv(sock) == "STATUS=a b\nERRNO=5"


def test_reloading_carries_monotonic_usec(manager: tuple[str, socket.socket]) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC on CLOCK_MONOTONIC (what Type=notify-reload checks)."""
    path, sock = manager
    n = Notifier(path)
    before = time.monotonic_ns() // 1000
    assert n.reloading()
    after = time.monotonic_ns() // 1000
    lines = recv(sock).split("\n")
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket() -> None:
    """'@name' addresses the abstract namespace."""
    name = f"shd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled
        assert n.ready()
        assert recv(sock) == "READY=1"


def test_from_env_reads_os_environ(manager: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, from_env() reads the process environment."""
    path, sock = manager
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier.from_env()
    assert n.watchdog_interval() == 30.0
    assert n.watchdog()
    assert recv(sock) == "WATCHDOG=1"


def test_unset_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier.from_env()
    assert not n.enabled
    with capture_logs() as logs:
        assert n.ready() is False
        assert n.status("x") is False
        assert n.watchdog() is False
        assert n.send_raw("READY=1") is False
    assert logs == []


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "me"}, None),
        ({}, None),
    ],
    ids=["usec", "our-pid", "other-pid", "zero", "garbage", "garbage-pid", "unset"],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    """Half of WATCHDOG_USEC, in seconds; off when WATCHDOG_PID names another process or a value is malformed."""
    n = Notifier.from_env({"NOTIFY_SOCKET": "/run/nonexistent", **env})
    assert n.watchdog_interval() == interval


def test_send_failure_never_raises_and_warns_once(tmp_path: Path) -> None:
    """A socket that is gone makes sends return False with one warning, never an exception."""
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.enabled
    with capture_logs() as logs:
        assert n.ready() is False
        assert n.watchdog() is False
        assert n.status("x") is False
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "notify.send_failed"


def test_unsupported_address_disables() -> None:
    """A NOTIFY_SOCKET that is neither an absolute path nor '@name' disables sending, with a warning."""
    with capture_logs() as logs:
        n = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert n.ready() is False
    assert [e["event"] for e in logs] == ["notify.unsupported_socket"]

"""The systemd notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Background: ../shared/docs/anchors.md §4.1. Send READY=1 only once the store is migrated, the inbox reconciled and
the observer running; ping WATCHDOG=1 from the main loop at `watchdog_interval()`, and only while the loop makes
progress and the inbox observer is alive.

`systemd.daemon.notify` (systemd-python, the `[systemd]` extra) is used when it is importable; otherwise the few lines
of the protocol are spoken here: one AF_UNIX/SOCK_DGRAM datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET`` (a path,
or ``@name`` for the abstract namespace). Sending never raises: a failure is logged once, as a warning.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import structlog

try:
    from systemd import daemon as _sd_daemon  # type: ignore[import-not-found]  # the optional [systemd] extra
except ImportError:  # the usual case: systemd-python needs libsystemd headers to build
    _sd_daemon = None

__all__ = ["Notifier"]

log = structlog.get_logger()


def _socket_address(value: str) -> str | None:
    """`$NOTIFY_SOCKET` as a socket address: an absolute path, or '@name' -> '\\0name'; None if unsupported."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None  # e.g. systemd 254+'s "vsock:" addresses


def _one_line(value: object) -> str:
    # A newline inside a value would start a new, unintended KEY=VALUE assignment.
    return str(value).replace("\r", " ").replace("\n", " ")


class Notifier:
    """Talks to the service manager; a no-op (`enabled` False) when not started by systemd with a notify socket.

    Every sending method returns True when the datagram was handed to the socket, False when disabled or failed;
    none raises. Thread-safe (each send uses its own socket), though the daemon should notify from its main loop.
    """

    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None):
        """`socket_path`: `$NOTIFY_SOCKET`'s value (None/'' disables sending). `watchdog_usec`: the watchdog timeout
        in microseconds when the watchdog applies to this process, else None. Prefer `from_env()`."""
        self.socket_path = socket_path or None
        self._address = _socket_address(self.socket_path) if self.socket_path else None
        if self.socket_path and self._address is None:
            log.warning("notify.unsupported_socket", notify_socket=self.socket_path)
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build from `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (`environ` defaults to os.environ).

        The watchdog is on when WATCHDOG_USEC is a positive integer and WATCHDOG_PID is unset or equals our pid
        (sd_watchdog_enabled(3): a child that inherited the variables must not ping). Malformed values disable the
        watchdog rather than raise.
        """
        env = os.environ if environ is None else environ
        watchdog_usec: int | None = None
        raw_usec = env.get("WATCHDOG_USEC", "").strip()
        raw_pid = env.get("WATCHDOG_PID", "").strip()
        if raw_usec:
            try:
                usec = int(raw_usec)
                pid_ok = not raw_pid or int(raw_pid) == os.getpid()
            except ValueError:
                log.warning("notify.bad_watchdog_env", watchdog_usec=raw_usec, watchdog_pid=raw_pid)
            else:
                if usec > 0 and pid_ok:
                    watchdog_usec = usec
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec)

    @property
    def enabled(self) -> bool:
        """True when there is a usable notify socket to send to."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog applies to us."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    # -- sending -----------------------------------------------------------------------------------------------

    def send(self, **fields: Any) -> bool:
        """Send ``KEY=value`` lines in argument order, e.g. ``send(READY=1, STATUS="idle")``. Keys are upper-cased;
        newlines inside values become spaces. Never raises."""
        if not fields:
            return False
        message = "\n".join(f"{key.upper()}={_one_line(value)}" for key, value in fields.items())
        return self.send_raw(message)

    def send_raw(self, message: str) -> bool:
        """Send `message` (newline-separated ``KEY=VALUE`` assignments) as one datagram, unchanged. Never raises."""
        if self._address is None:
            return False
        try:
            if _sd_daemon is not None and self.socket_path == os.environ.get("NOTIFY_SOCKET"):
                if not _sd_daemon.notify(message):
                    raise OSError("systemd.daemon.notify returned False")
                return True
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode("utf-8"))
            return True
        except Exception as exc:  # noqa: BLE001 - never let a notification take the daemon down
            if not self._warned:
                self._warned = True
                log.warning("notify.send_failed", notify_socket=self.socket_path, error=str(exc))
            return False

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (start-up finished, or a reload done), optionally with a STATUS= line."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """STATUS=<text>: the one-line status `systemctl status shd` shows."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """WATCHDOG=1: "the main loop is healthy". Only call it when that is true."""
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, as Type=notify-reload requires); send `ready()` when
        the reload is done."""
        return self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun (draining in-flight work within TimeoutStopSec)."""
        if status is None:
            return self.send(STOPPING=1)
        return self.send(STOPPING=1, STATUS=status)

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC: ask for `seconds` more before the start/stop timeout fires (e.g. a long drain)."""
        return self.send(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

"""Logging: structlog event dicts through small processors, rendered for where they go.

- a terminal: human-readable console lines;
- anything else (a pipe, a file, systemd's journal stream): one JSON object per line, on stderr (or the file
  `setup` is given: `shd process --log-file`, or the live progress line of progress.py, which prints them above it);
- under systemd with systemd-python installed (`format = "journal"`, or `auto` when $JOURNAL_STREAM is set):
  structured fields straight into the journal (JOB=, FRAME=, PREDICTION_ID=...).
Every line about a job or frame carries its ids (bind them: `log.bind(job=..., frame=...)`).
A redaction processor replaces every secret registered with `redact()` (the API token) wherever it appears.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Protocol

import structlog

_secrets: set[str] = set()


def redact(secret: str | None) -> None:
    """Never let `secret` appear in a log line again (in any field, any position)."""
    if secret and len(secret) >= 4:
        _secrets.add(secret)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for s in _secrets:
            if s in value:
                value = value.replace(s, "[REDACTED]")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return _scrub(f"{type(value).__name__}: {value}")
    return value


def redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        event[k] = _scrub(event[k])
    return event


class _JournalRenderer:
    """Send the event to journald with its fields upper-cased, then drop it so nothing is printed as well."""

    PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}

    def __init__(self) -> None:
        from systemd import journal  # type: ignore[import-not-found]  # the optional [systemd] extra

        self._send = journal.send

    def __call__(self, _: Any, method: str, event: MutableMapping[str, Any]) -> str:
        message = str(event.pop("event", ""))
        level = str(event.pop("level", method))
        fields = {k.upper(): str(v) for k, v in event.items() if k.isidentifier()}
        self._send(MESSAGE=message, PRIORITY=str(self.PRIORITY.get(level, 6)), SYSLOG_IDENTIFIER="shd", **fields)
        raise structlog.DropEvent


LEVELS = ("debug", "info", "warning", "error")


class Out(Protocol):
    """Where log lines go: a text file, or anything that writes like one."""

    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...


def _pick_format(fmt: str, out: Out) -> str:
    if fmt != "auto":
        return fmt
    if out is sys.stderr and os.environ.get("JOURNAL_STREAM"):
        try:
            import systemd.journal  # type: ignore[import-not-found]  # noqa: F401 - only: is the extra installed?

            return "journal"
        except ImportError:
            return "json"
    return "console" if out.isatty() else "json"


class _Lossy:
    """`out` whose write errors are counted, never raised: a log line that cannot be written (its reader went away,
    a full disk under --log-file) must not end the thread that logs it (a worker holding a paid prediction), nor
    the work. `lost()` says what was lost; the command reports it when it ends."""

    def __init__(self, out: Out):
        self.out = out

    def write(self, text: str, /) -> int:
        try:
            return self.out.write(text)
        except (OSError, ValueError) as e:  # ValueError: the file was closed
            _note_lost(e)
            return 0

    def flush(self) -> None:
        try:
            self.out.flush()
        except (OSError, ValueError) as e:
            _note_lost(e)

    def isatty(self) -> bool:
        return self.out.isatty()


_lost: list[str] = []  # why the first log write that failed did (empty while none has)


def _note_lost(error: BaseException) -> None:
    if not _lost:
        _lost.append(f"{type(error).__name__}: {error}")


def lost() -> str | None:
    """Why log lines were lost (the first failed write's error), or None if every line was written."""
    return _lost[0] if _lost else None


def setup(level: str = "info", fmt: str = "auto", out: Out | None = None) -> None:
    """Configure structlog for the process (idempotent; called again after a config reload): lines at `level` and
    above, in format `fmt` ("auto": see the module docstring), written to `out` (default stderr); a line that
    cannot be written is lost, never an error of the code that logs it (see `lost()`)."""
    out = sys.stderr if out is None else out
    chosen = _pick_format(fmt, out)
    renderer: Any
    if chosen == "journal":
        try:
            renderer = _JournalRenderer()
        except ImportError:
            renderer = structlog.processors.JSONRenderer()
    elif chosen == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_Lossy(out)),  # type: ignore[arg-type]  # writes, flushes
        cache_logger_on_first_use=False,
    )


def get(**bound: Any) -> Any:
    """A logger with `bound` context (job=..., frame=...)."""
    return structlog.get_logger("shd").bind(**bound)

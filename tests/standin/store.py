"""Records kept by the stand-in: predictions (with lazily computed status), uploaded files, and requests.

A prediction never needs a thread: its status at time *t* follows from its creation time, ``queue_delay`` and
``run_time`` (all decided at creation), plus an optional cancel time.  ``starting`` lasts until
``created + queue_delay``, ``processing`` (with growing tqdm logs) until ``+ run_time``, then the planned outcome.
"""

from __future__ import annotations

import base64
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from .models import OutputFile, progress_logs

JSON = dict[str, Any]
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_prediction_id() -> str:
    """A 26-character ``[a-z0-9]`` id from the OS RNG (never repeats across stand-in instances)."""
    return "".join(_ID_ALPHABET[b % 36] for b in os.urandom(26))


def new_file_id() -> str:
    """A Files-API id shaped like the real ones (base64 of a UUID string)."""
    raw = os.urandom(16).hex()
    uuid = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
    return base64.b64encode(uuid.encode()).decode().rstrip("=")


def rfc3339(t: float, digits: int = 6) -> str:
    """``t`` (epoch seconds) as RFC 3339 UTC with a ``Z`` suffix and ``digits`` fractional digits."""
    text = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[: len(text) - 6 + digits] + "Z"


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 / ISO 8601 timestamp (``Z`` or offset; naive means UTC) into epoch seconds."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "+"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


@dataclass
class RecordedRequest:
    """One HTTP request as received (``/__control`` calls are not recorded)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    time: float
    status: int | None = None  # response status; None if the connection was closed without a response
    fault: str | None = None  # the injected fault applied to it, if any

    @property
    def params(self) -> dict[str, list[str]]:
        """The query string, parsed."""
        return parse_qs(self.query)

    def to_json(self) -> JSON:
        """JSON form (body as UTF-8 text when possible, else base64 under ``body_b64``)."""
        out: JSON = {"method": self.method, "path": self.path, "query": self.query, "headers": self.headers,
                     "time": self.time, "status": self.status, "fault": self.fault}
        try:
            out["body"] = self.body.decode()
        except UnicodeDecodeError:
            out["body_b64"] = base64.b64encode(self.body).decode()
        return out


@dataclass
class FileRecord:
    """A file uploaded through ``POST /v1/files``."""

    id: str
    name: str
    content_type: str
    content: bytes
    metadata: JSON
    created: float
    expires: float
    checksums: dict[str, str]

    def to_json(self, base: str) -> JSON:
        """The File JSON of the real API."""
        return {"id": self.id, "name": self.name, "content_type": self.content_type, "size": len(self.content),
                "etag": self.checksums["md5"], "checksums": dict(self.checksums), "metadata": self.metadata,
                "created_at": rfc3339(self.created, 3), "expires_at": rfc3339(self.expires, 3),
                "urls": {"get": f"{base}/v1/files/{self.id}"}}


@dataclass
class PredictionRecord:
    """A prediction; its status, logs and JSON are computed on demand from its timeline.

    ``outcome`` is the terminal status decided at creation (``succeeded``/``failed``/``canceled``/``aborted``,
    or ``stuck``: it never leaves ``starting``); a client cancel overrides it.
    """

    id: str
    model: str
    version: str
    input: JSON  # as sent (echoed in responses)
    effective_input: JSON  # with schema defaults (and the picked seed)
    input_sha256: dict[str, str]  # file input field -> sha256 of the resolved bytes
    created: float
    queue_delay: float
    run_time: float
    output_ttl: float
    outcome: str
    error: str | None
    output: Any
    files: dict[str, OutputFile]
    log_header: str
    steps: int
    seed: int | None
    create_number: int
    base: str
    extras: JSON = field(default_factory=dict)  # webhook, webhook_events_filter, stream ...
    rule: str | None = None  # repr of the outcome override that matched
    missing_version: bool = False
    billed_time: float | None = None  # the predict_time reported once it ran to its end (None: the time it ran)
    processing_on_timeout: bool = False
    partial_output: bool = False
    canceled_at: float | None = None
    expired_at: float | None = None
    forgotten: bool = False

    # -- timeline -----------------------------------------------------------------------------------------------
    @property
    def started(self) -> float:
        """When it (would) enter ``processing``; ``inf`` when stuck."""
        return math.inf if self.outcome == "stuck" else self.created + self.queue_delay

    @property
    def planned_end(self) -> float:
        """When the planned outcome is reached (``inf`` when stuck)."""
        if self.outcome == "aborted":
            return self.started
        return self.started + self.run_time

    def terminal_time(self) -> float:
        """When it becomes terminal, taking a cancel into account."""
        end = self.planned_end
        return min(end, self.canceled_at) if self.canceled_at is not None else end

    def status_at(self, t: float) -> str:
        """The status at time ``t``."""
        if self.canceled_at is not None and self.canceled_at <= self.planned_end and t >= self.canceled_at:
            return "canceled"
        if t >= self.planned_end:
            return self.outcome
        return "processing" if t >= self.started else "starting"

    @property
    def status(self) -> str:
        """The status now."""
        return self.status_at(time.time())

    def is_terminal(self, t: float | None = None) -> bool:
        """Whether the prediction is terminal at ``t`` (default: now)."""
        return self.status_at(time.time() if t is None else t) in TERMINAL

    def expired(self, t: float) -> bool:
        """Whether its data has been removed at time ``t``."""
        if not self.is_terminal(t):
            return False
        if self.expired_at is not None and t >= self.expired_at:
            return True
        return t >= self.terminal_time() + self.output_ttl

    def history(self, t: float | None = None) -> list[tuple[str, float]]:
        """``[(status, since)]`` up to ``t`` (default: now)."""
        t = time.time() if t is None else t
        out = [("starting", self.created)]
        status = self.status_at(t)
        if t >= self.started and self.started < self.terminal_time() and self.outcome != "aborted":
            out.append(("processing", self.started))
        if status in TERMINAL:
            out.append((status, self.terminal_time()))
        return out

    def logs_at(self, t: float) -> str:
        """Logs at time ``t`` (empty in ``starting``)."""
        if t < self.started or self.outcome == "aborted":
            return ""
        end = min(t, self.terminal_time())
        fraction = (end - self.started) / self.run_time if self.run_time > 0 else 1.0
        if self.status_at(t) == "succeeded":
            fraction = 1.0
        logs = progress_logs(self.log_header, self.steps, fraction, self.run_time)
        if self.status_at(t) == "failed" and self.error:
            logs += f"{self.error}\n"
        return logs

    def file_available(self, name: str, t: float) -> bool:
        """Whether ``/delivery/{id}/{name}`` serves bytes at ``t``."""
        if self.forgotten or name not in self.files or self.expired(t):
            return False
        if self.canceled_at is not None and self.status_at(t) == "canceled":
            return False
        return self.outcome == "succeeded" and self.output is not None

    # -- JSON ---------------------------------------------------------------------------------------------------
    def render(self, t: float | None = None, *, status: str | None = None, output: Any = ...) -> JSON:
        """The prediction JSON at ``t``; ``status``/``output`` override what is shown (``Prefer: wait`` quirks)."""
        t = time.time() if t is None else t
        actual = self.status_at(t)
        shown = status or actual
        url = f"{self.base}/v1/predictions/{self.id}"
        body: JSON = {"id": self.id, "model": self.model, "version": self.version, "input": self.input,
                      "logs": self.logs_at(t), "output": None, "data_removed": False, "error": None,
                      "status": shown, "created_at": rfc3339(self.created),
                      "urls": {"cancel": f"{url}/cancel", "get": url, "web": f"https://replicate.com/p/{self.id}"},
                      "source": "api"}
        if shown != "starting" and t >= self.started and self.outcome != "aborted":
            body["started_at"] = rfc3339(min(self.started, self.terminal_time()))
        if actual in TERMINAL and shown in TERMINAL:
            end = self.terminal_time()
            body["completed_at"] = rfc3339(end)
            ran = max(0.0, end - self.started)
            if self.billed_time is not None and actual in ("succeeded", "failed"):
                ran = self.billed_time
            body["metrics"] = {"predict_time": round(ran, 6), "total_time": round(end - self.created, 6)}
        if actual == "succeeded":
            body["output"] = self.output
        elif actual == "failed":
            body["error"] = self.error
        elif actual == "canceled":
            body["logs"] = body["logs"] or None
        if output is not ...:
            body["output"] = output
        if self.expired(t):
            body.update(output=None, logs="", input={}, data_removed=True)
        if self.missing_version:
            del body["version"]
        return body

    def to_json(self, t: float | None = None) -> JSON:
        """A recording-oriented JSON summary (for ``/__control/predictions``)."""
        t = time.time() if t is None else t
        return {"id": self.id, "model": self.model, "version": self.version, "input": self.input,
                "effective_input": self.effective_input, "input_sha256": self.input_sha256,
                "status": self.status_at(t), "history": self.history(t), "outcome": self.outcome,
                "error": self.error, "output": self.output, "seed": self.seed, "create_number": self.create_number,
                "created": self.created, "rule": self.rule, "forgotten": self.forgotten, "extras": self.extras}

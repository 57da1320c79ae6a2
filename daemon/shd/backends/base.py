"""The two small interfaces shd paints through, and the remote-prediction service they run on.

A paid call goes through four steps that the scheduler drives, so that each can be recorded in the store in between:
    input  = model.input_for(...)      may upload the frame (free, not a prediction); recorded in ledger_form
    status = remote.create(ref, input) the paid call; its id is recorded the moment it returns
    status = remote.get(id)            polled with shd's own deadline; after a crash, resumed from the recorded id
    result = model.result(status)      the cleaned prompt, or the image bytes (downloaded promptly)

Every method raises only `shd.errors.BackendError` subclasses; the subclass says what the scheduler does next
(Transient: back off and retry; RateLimited: slow down; AuthFailed: pause everything; Rejected / ModelFailed: fail
the frame or retry with a new seed; OutputGone: create again). Every method has a bounded duration.

Implementations: `replicate.py` (Replicate's HTTP API) and `memory.py` (in this process, for tests and benchmarks);
`models.py` holds the two models' input and output shapes, over any Remote. tests/contract/ runs one behavioural
suite against every Remote in its list.
"""

from __future__ import annotations

import base64
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shd.errors import BackendError

TERMINAL = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class Status:
    """What the service says about one prediction."""

    remote_id: str
    status: str                     # starting | processing | succeeded | failed | canceled (| anything new)
    output: Any = None
    error: str | None = None
    predict_time: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class Remote(ABC):
    """A prediction service (Replicate's HTTP API, or a local runner)."""

    @abstractmethod
    def create(self, ref: str, input: Mapping[str, Any]) -> Status:
        """Start one paid prediction of model `ref` ('owner/name:version'). May wait briefly for it to finish.
        A Transient with `maybe_created` means the request may have created (and billed) it: call `find` first."""

    @abstractmethod
    def get(self, remote_id: str) -> Status:
        """The prediction's current state. OutputGone if the service no longer knows it."""

    @abstractmethod
    def cancel(self, remote_id: str) -> None:
        """Ask the service to stop the prediction; a finished one is left as it is."""

    @abstractmethod
    def find(self, ref: str, input: Mapping[str, Any], created_after: float) -> Status | None:
        """A prediction of `ref` with this input (compared in `ledger_form`) created after `created_after` (epoch
        s), if one exists: how a create whose response was lost is recovered instead of paid for twice."""

    @abstractmethod
    def upload(self, path: Path) -> str:
        """Make a local file available to the service as an input (inline, or uploaded); returns what to put in
        the input."""

    @abstractmethod
    def fetch(self, item: Any) -> bytes:
        """The bytes of one output file (a URL, data: URI or client file object). OutputGone once it expired."""

    @abstractmethod
    def failure(self, status: Status) -> BackendError:
        """The error a prediction that ended `failed` stands for: Transient (the service's own hiccup: retry),
        ModelFailed with `retry_with_new_seed` (e.g. NSFW: another seed may pass) or without (this input fails)."""

    @abstractmethod
    def check_auth(self) -> None:
        """Raise AuthFailed if the credentials are (still) refused; used to resume after a pause."""

    @abstractmethod
    def set_token(self, token: str) -> None:
        """Use these credentials from now on, in every thread (a fixed token is picked up without a restart)."""


class ImageToPrompt(ABC):
    """Reads a picture and says what it shows, as a text-to-image prompt."""

    ref: str

    @abstractmethod
    def input_for(self, image: Path) -> dict[str, Any]:
        """The prediction input for this frame (may upload it through the Remote)."""

    @abstractmethod
    def input_with(self, image: str) -> dict[str, Any]:
        """The prediction input with `image` as the picture (what `input_for` sends once the frame is uploaded;
        with the frame's digest instead, what its result is keyed by)."""

    @abstractmethod
    def result(self, status: Status) -> str:
        """The cleaned prompt from a succeeded prediction (one line, no surrounding whitespace)."""


class PromptToImage(ABC):
    """Paints a picture from a prompt."""

    ref: str

    @abstractmethod
    def input_for(self, prompt: str, seed: int, *, size: tuple[int, int] | None = None,
                  image: Path | None = None) -> dict[str, Any]:
        """The prediction input for this prompt and seed, painted `size` (width, height) when given, over the
        picture `image` when given (img2img: uploaded through the Remote; the model then paints at its size)."""

    @abstractmethod
    def result(self, status: Status) -> bytes:
        """The image bytes (PNG/JPEG/WebP) from a succeeded prediction, downloaded now."""


@dataclass(frozen=True)
class Backend:
    """What the scheduler paints through: one prediction service and the two models shd runs on it."""

    remote: Remote
    prompter: ImageToPrompt
    painter: PromptToImage


def ledger_form(input: Mapping[str, Any]) -> dict[str, Any]:
    """A prediction input as the ledger keeps it: each inline `data:<mime>;base64,...` file becomes
    `data:<mime>;sha256,<digest of its bytes>`, so a frame sent inline costs the database 80 bytes, not its size.
    Two inputs match (a lost create looked up on the server) when their ledger forms are equal. Idempotent."""
    return {k: _ledger_value(v) for k, v in input.items()}


def _ledger_value(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if sep and header.endswith(";base64"):
            try:
                content = base64.b64decode(payload, validate=True)
            except ValueError:
                return value
            return f"{header[:-len(';base64')]};sha256,{hashlib.sha256(content).hexdigest()}"
        return value
    if isinstance(value, Mapping):
        return {k: _ledger_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_ledger_value(v) for v in value]
    return value


def clean_prompt(text: Any) -> str:
    """A prompt as one line: newlines and runs of whitespace become single spaces, ends are stripped."""
    return " ".join(str(text).split())

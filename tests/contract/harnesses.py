"""One harness per backend: the backend under test, and the controls of the service behind it.

`BACKENDS` is the list the contract suite runs against. A new backend (a local GPU, Cog containers) gets every
contract test by adding a harness class here: build its Remote and the models over it, and say how to make its
service slow, refuse a create, fail a prediction, lose an answer, expire outputs or change the accepted token,
and add its name to BACKENDS.
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from shd import config
from shd.backends import models
from shd.backends.base import Backend, Remote, Status
from shd.backends.memory import ManualClock, MemoryRemote, MemoryService
from shd.backends.replicate import ReplicateRemote
from shd.errors import ModelFailed, RateLimited, Rejected, Transient
from tests.standin import StandIn

CREATE_WAIT = 1  # seconds a create may wait for its result (Replicate's smallest `Prefer: wait`)
IMAGE_INPUT = {"width": 64, "height": 48, "num_inference_steps": 4}
# What each failure looks like on Replicate (docs/replicate-api.md), and what shd must make of it.
MODEL_ERRORS = {
    "nsfw": "NSFW content detected. Try running it again, or try a different prompt.",
    "bad_input": "cannot identify image file <_io.BytesIO object at 0x7f>",
    "interrupted": "Prediction interrupted; please retry (code: PA)",
}


class Harness(ABC):
    """A backend under test. `backend` is its Remote with the three models over it."""

    backend: Backend

    @property
    def remote(self) -> Remote:
        return self.backend.remote

    def _models(self, remote: Remote) -> Backend:
        return Backend(remote, models.Prompter(remote, config.IMG2PROMPT),
                       models.Painter(remote, config.SDXL, IMAGE_INPUT), models.Film(remote, config.FILM))

    def settle(self, remote: Remote, remote_id: str, polls: int = 200) -> Status:
        """Poll a prediction until it is finished, as the scheduler does (bounded)."""
        for _ in range(polls):
            status = remote.get(remote_id)
            if status.terminal:
                return status
            self.wait(0.05)
        raise AssertionError(f"prediction {remote_id} still {status.status} after {polls} polls")

    @abstractmethod
    def now(self) -> float:
        """The service's clock (epoch seconds), as `find`'s created_after reads it."""

    @abstractmethod
    def wait(self, seconds: float) -> None:
        """Let this much of the service's time pass."""

    @abstractmethod
    def new_remote(self) -> Remote:
        """Another client of the same service, as a restarted daemon builds."""

    @abstractmethod
    def unreachable_remote(self) -> Remote:
        """A client whose requests cannot reach the service at all."""

    @abstractmethod
    def slow_predictions(self, seconds: float) -> None:
        """Predictions created from now on take about this long."""

    @abstractmethod
    def stick_next_prediction(self) -> None:
        """The next prediction does not finish until it is canceled."""

    @abstractmethod
    def refuse_next_create(self, kind: str, retry_after: int = 7) -> None:
        """The next create is turned away, creating nothing: "rate_limited" (with the hint), "server_error" (5xx),
        "rejected" (an input the service refuses)."""

    @abstractmethod
    def lose_next_create_answer(self) -> None:
        """The next create creates its prediction, but its answer never arrives."""

    @abstractmethod
    def fail_next_prediction(self, kind: str) -> None:
        """The next prediction ends failed with one of MODEL_ERRORS' kinds."""

    @abstractmethod
    def expire_outputs(self) -> None:
        """The service removes the output of every finished prediction."""

    @abstractmethod
    def forget(self, remote_id: str) -> None:
        """The service no longer knows this prediction."""

    @abstractmethod
    def accept_only(self, token: str) -> None:
        """The service accepts this token from now on, and no other."""

    @abstractmethod
    def creates(self) -> int:
        """Predictions the service has created (each one paid for)."""


class MemoryHarness(Harness):
    """shd.backends.memory on a clock that moves only when told: waiting costs no time."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.service = MemoryService(clock=self.clock)
        self.backend = self._models(self.new_remote())

    def now(self) -> float:
        return self.clock.now()

    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def new_remote(self) -> Remote:
        return MemoryRemote(self.service, create_wait=CREATE_WAIT)

    def unreachable_remote(self) -> Remote:
        self.service.unreachable = True
        return self.remote

    def slow_predictions(self, seconds: float) -> None:
        for model in (config.IMG2PROMPT, config.SDXL):
            self.service.set_latency(model, 0.05, seconds)

    def stick_next_prediction(self) -> None:
        self.service.stick_predictions()

    def refuse_next_create(self, kind: str, retry_after: int = 7) -> None:
        errors = {"rate_limited": RateLimited("rate limited (429)", float(retry_after)),
                  "server_error": Transient("memory service error 503"),
                  "rejected": Rejected("the memory service rejected the input (422)")}
        self.service.refuse_creates(errors[kind])

    def lose_next_create_answer(self) -> None:
        self.service.lose_create_answers()

    def fail_next_prediction(self, kind: str) -> None:
        errors = {"nsfw": ModelFailed(MODEL_ERRORS["nsfw"], retry_with_new_seed=True),
                  "bad_input": ModelFailed(MODEL_ERRORS["bad_input"]),
                  "interrupted": Transient(MODEL_ERRORS["interrupted"])}
        self.service.fail_predictions(errors[kind])

    def expire_outputs(self) -> None:
        self.service.expire_outputs()

    def forget(self, remote_id: str) -> None:
        self.service.forget(remote_id)

    def accept_only(self, token: str) -> None:
        self.service.token = token

    def creates(self) -> int:
        return self.service.creates


class ReplicateHarness(Harness):
    """shd.backends.replicate through the real `replicate` client, over HTTPS, to the stand-in server."""

    def __init__(self, standin: StandIn):
        self.standin = standin
        self.backend = self._models(self.new_remote())

    def now(self) -> float:
        return time.time()

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)  # the stand-in's predictions move with the wall clock

    def new_remote(self) -> Remote:
        return ReplicateRemote(self.standin.token, base_url=self.standin.url, create_wait=CREATE_WAIT,
                               request_timeout=10)

    def unreachable_remote(self) -> Remote:
        with socket.socket() as s:  # a port nothing listens on: the connection is refused
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return ReplicateRemote(self.standin.token, base_url=f"https://127.0.0.1:{port}", create_wait=CREATE_WAIT,
                               request_timeout=10)

    def slow_predictions(self, seconds: float) -> None:
        for model in (config.IMG2PROMPT, config.SDXL):
            self.standin.set_latency(model, 0.05, seconds)

    def stick_next_prediction(self) -> None:
        self.standin.override("stuck", times=1)

    def refuse_next_create(self, kind: str, retry_after: int = 7) -> None:
        status = {"rate_limited": 429, "server_error": 503, "rejected": 422}[kind]
        self.standin.inject("POST /v1/predictions", status=status, times=1,
                            retry_after=retry_after if kind == "rate_limited" else None)

    def lose_next_create_answer(self) -> None:
        self.standin.inject("POST /v1/predictions", kind="close_after", times=1)

    def fail_next_prediction(self, kind: str) -> None:
        self.standin.fail_predictions(MODEL_ERRORS[kind], times=1)

    def expire_outputs(self) -> None:
        self.standin.expire_outputs()

    def forget(self, remote_id: str) -> None:
        self.standin.forget(remote_id)

    def accept_only(self, token: str) -> None:
        self.standin.set_token(token)

    def creates(self) -> int:
        return self.standin.count_creates()


@contextmanager
def memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield MemoryHarness()


@contextmanager
def replicate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with StandIn(tmp_path / "standin") as standin:
        for key, value in standin.env().items():  # the client trusts the stand-in's CA through SSL_CERT_FILE
            monkeypatch.setenv(key, value)
        yield ReplicateHarness(standin)


# Every backend the contract suite runs against: name -> a context manager that yields its harness.
BACKENDS: dict[str, Callable[[Path, pytest.MonkeyPatch], AbstractContextManager[Harness]]] = {
    "memory": memory,
    "replicate": replicate,
}

"""An in-memory prediction service and its Remote, for tests and benchmarks (like dramatiq's stub broker).

`MemoryService` plays the server: predictions with ids whose status moves with its clock (`starting` for the
model's queue delay, `processing` for its run time, then `succeeded` or `failed`), outputs removed `output_ttl`
seconds after they finish, uploaded files, the one token it accepts, and failures injected on purpose.
`MemoryRemote` is a client of it and implements `Remote` to the same contract as Replicate's (tests/contract/ runs
one suite against both); several clients may share one service, as a restarted daemon meets the same server.

Three models are built in, told apart by their input: one with `prompt` is painted (SDXL's shape: a list of one
PNG, a solid colour deterministic in the prompt and seed, `width` x `height`, or the size of its `image` when it
has one, as SDXL's img2img does), one with only an `image` is described (img2prompt's shape: one line,
deterministic in the image's bytes), one with `frame1` and `frame2` is interpolated (FILM's shape: for
times_to_interpolate k = 1 one PNG, the two pictures blended half and half; else an mp4 of 2^k + 1 frames at 30 fps,
the first and last the two pictures and linear blends between, made with ffmpeg when it is downloaded). FILM's run
time is the configured one per in-between: its network runs 2^k - 1 times per pair, and so does its predict_time.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shd import inbetweens, media, png
from shd.backends.base import TERMINAL, Remote, Status, ledger_form
from shd.errors import AuthFailed, BackendError, MediaError, ModelFailed, OutputGone, Rejected, Transient

OUTPUTS = "mem://outputs/"
FILES = "mem://files/"


class Clock(Protocol):
    """Epoch seconds, and a way to let them pass."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The wall clock; `sleep` blocks the calling thread."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told: `sleep` (and `advance`) move it at once, so waiting costs no time."""

    def __init__(self, start: float | None = None):
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)


@dataclass
class _Prediction:
    id: str
    ref: str
    input: dict[str, Any]
    created: float
    queue_delay: float
    run_time: float
    failure: BackendError | None = None   # ends `failed` with this error
    stuck: bool = False                   # stays `starting` until canceled
    canceled_at: float | None = None
    expired: bool = False
    forgotten: bool = False

    @property
    def done_at(self) -> float:
        return float("inf") if self.stuck else self.created + self.queue_delay + self.run_time

    def ran(self, now: float) -> float | None:
        """Its predict_time (what is billed): the seconds it was processing, None if it never started."""
        start, end = self.created + self.queue_delay, min(now, self.done_at, self.canceled_at or float("inf"))
        return round(end - start, 6) if end >= start else None

    def status_at(self, now: float) -> str:
        if self.canceled_at is not None:
            return "canceled"
        if now >= self.done_at:
            return "failed" if self.failure is not None else "succeeded"
        return "starting" if now < self.created + self.queue_delay else "processing"


@dataclass
class _Rule:
    kind: str                   # refuse | lose_answer | fail | stick | fail_cancel
    left: int
    error: BackendError | None = None
    model: str | None = None    # owner/name (a version is ignored), or any model


class MemoryService:
    """The server side: predictions, files, the accepted token and the injected failures. Thread-safe."""

    def __init__(self, *, token: str = "mem-token", clock: Clock | None = None,
                 latency: Mapping[str, tuple[float, float]] | None = None, output_ttl: float = 3600.0):
        self.token = token
        self.clock: Clock = clock or RealClock()
        self.output_ttl = output_ttl
        self.unreachable = False   # every request fails as a refused connection would: nothing reaches the server
        self._latency = {model.split(":")[0]: value for model, value in (latency or {}).items()}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._predictions: dict[str, _Prediction] = {}
        self._files: dict[str, bytes] = {}
        self._clips: dict[str, bytes] = {}   # FILM's answers, by prediction id
        self._rules: list[_Rule] = []

    # --- what tests and benchmarks set ---------------------------------------------------------------------------
    def set_latency(self, model: str, queue_delay: float, run_time: float) -> None:
        """Seconds in `starting` and in `processing` for later predictions of `owner/name`."""
        with self._lock:
            self._latency[model.split(":")[0]] = (queue_delay, run_time)

    def refuse_creates(self, error: BackendError, times: int = 1) -> None:
        """The next `times` creates raise `error` and create nothing (a 429, 401, 422 or 5xx answer)."""
        self._add(_Rule("refuse", times, error))

    def lose_create_answers(self, times: int = 1, model: str | None = None) -> None:
        """The next `times` creates (of `owner/name`, or of any model) create their prediction, then fail as a
        dropped connection does."""
        self._add(_Rule("lose_answer", times, None, model and model.split(":")[0]))

    def fail_predictions(self, error: BackendError, times: int = 1, model: str | None = None) -> None:
        """The next `times` predictions (of `owner/name`, or of any model) end `failed`; `failure()` says `error`."""
        self._add(_Rule("fail", times, error, model and model.split(":")[0]))

    def stick_predictions(self, times: int = 1, model: str | None = None) -> None:
        """The next `times` predictions stay `starting` until they are canceled."""
        self._add(_Rule("stick", times, None, model and model.split(":")[0]))

    def fail_cancels(self, error: BackendError, times: int = 1, model: str | None = None) -> None:
        """The next `times` cancels (of predictions of `owner/name`, or of any model) raise `error` and cancel
        nothing: the prediction runs on (a cancel lost on the way, a 5xx)."""
        self._add(_Rule("fail_cancel", times, error, model and model.split(":")[0]))

    def expire_outputs(self) -> None:
        """Remove the output of every finished prediction now, as the service's retention does after an hour."""
        now = self.clock.now()
        with self._lock:
            for p in self._predictions.values():
                if p.status_at(now) in TERMINAL:
                    p.expired = True

    def forget(self, remote_id: str) -> None:
        """Make a prediction vanish: reading or canceling it is OutputGone, lists no longer show it."""
        with self._lock:
            self._predictions[remote_id].forgotten = True

    @property
    def creates(self) -> int:
        """How many predictions were created (each one paid)."""
        with self._lock:
            return len(self._predictions)

    def spans(self) -> list[tuple[str, float, float]]:
        """Each prediction's model ('owner/name'), when it was created and when it ended (finished, or was
        canceled; inf while it runs), oldest first: what was in flight together."""
        with self._lock:
            return [(p.ref.split(":")[0], p.created, min(p.done_at, p.canceled_at or float("inf")))
                    for p in self._predictions.values()]

    @property
    def uploads(self) -> list[bytes]:
        """The files uploaded so far, oldest first."""
        with self._lock:
            return list(self._files.values())

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take(self, kinds: tuple[str, ...], model: str) -> _Rule | None:
        for rule in self._rules:
            if rule.kind in kinds and rule.left > 0 and rule.model in (None, model):
                rule.left -= 1
                return rule
        return None

    # --- the requests a MemoryRemote sends ----------------------------------------------------------------------
    def _admit(self, token: str) -> None:
        if self.unreachable:
            raise Transient("network error: ConnectError: connection refused (memory service unreachable)",
                            unreachable=True)
        if token != self.token:
            raise AuthFailed("the memory service refused the credentials (401)")

    def _create(self, ref: str, input: Mapping[str, Any]) -> _Prediction:
        model = ref.split(":")[0]
        with self._lock:
            refused = self._take(("refuse",), model)
            if refused is not None and refused.error is not None:
                raise refused.error
            outcome = self._take(("fail", "stick"), model)
            queue_delay, run_time = self._latency.get(model, (0.0, 0.0))
            if "frame1" in input:  # FILM: the network runs once per in-between
                run_time *= 2 ** int(input.get("times_to_interpolate", 1)) - 1
            p = _Prediction(f"mem{next(self._ids):06d}", ref, dict(input), self.clock.now(), queue_delay, run_time,
                            failure=outcome.error if outcome and outcome.kind == "fail" else None,
                            stuck=bool(outcome and outcome.kind == "stick"))
            self._predictions[p.id] = p
            lost = self._take(("lose_answer",), model)
        if lost is not None:
            raise Transient("network error: RemoteProtocolError: connection dropped after the request was sent",
                            maybe_created=True)
        return p

    def _find(self, remote_id: str) -> _Prediction:
        with self._lock:
            p = self._predictions.get(remote_id)
        if p is None or p.forgotten:
            raise OutputGone(f"prediction {remote_id} no longer exists on the server")
        return p

    def _cancel(self, remote_id: str) -> None:
        p = self._find(remote_id)
        with self._lock:
            refused = self._take(("fail_cancel",), p.ref.split(":")[0])
            if refused is not None and refused.error is not None:
                raise refused.error
            now = self.clock.now()
            if p.status_at(now) not in TERMINAL:
                p.canceled_at = now

    def _lookup(self, ref: str, wanted: Mapping[str, Any], created_after: float) -> _Prediction | None:
        """The newest prediction of `ref` created at or after `created_after` whose input's ledger form is `wanted`."""
        with self._lock:
            candidates = sorted(self._predictions.values(), key=lambda p: p.created, reverse=True)
        return next((p for p in candidates if not p.forgotten and p.ref == ref and p.created >= created_after
                     and ledger_form(p.input) == wanted), None)

    def _store_file(self, name: str, data: bytes) -> str:
        with self._lock:
            key = f"{next(self._ids):06d}-{name}"
            self._files[key] = data
        return FILES + key

    def _status(self, p: _Prediction) -> Status:
        now = self.clock.now()
        status = p.status_at(now)
        output = None
        if status == "succeeded" and not p.expired and now < p.done_at + self.output_ttl:
            output = self._output(p)
        return Status(p.id, status, output=output, error=str(p.failure) if status == "failed" else None,
                      predict_time=p.ran(now) if status in TERMINAL else None)

    def _output(self, p: _Prediction) -> Any:
        if "frame1" in p.input:
            return f"{OUTPUTS}{p.id}/{'out.png' if p.input.get('times_to_interpolate', 1) == 1 else 'out.mp4'}"
        if "prompt" not in p.input:
            return f"a painting of {hashlib.sha256(self._file(p.input['image'])).hexdigest()[:12]}, in memory\n "
        return [f"{OUTPUTS}{p.id}/0.png"]

    def _file(self, ref: Any) -> bytes:
        text = str(ref)
        if text.startswith("data:"):
            return base64.b64decode(text.partition(",")[2])
        with self._lock:
            return self._files.get(text.removeprefix(FILES), text.encode())

    def _download(self, item: Any) -> bytes:
        text = str(item)
        if not text.startswith(OUTPUTS):
            raise ModelFailed(f"unexpected output: {text[:80]!r}")
        p = self._find(text.removeprefix(OUTPUTS).split("/")[0])
        if self._status(p).output is None:
            raise OutputGone(f"output file is gone ({text})")
        if "frame1" in p.input:
            return self._interpolated(p)
        digest = hashlib.sha256(f"{p.input.get('prompt')}\x00{p.input.get('seed')}".encode()).digest()
        size = png.size(self._file(p.input["image"])) if "image" in p.input else None
        width, height = size or (int(p.input.get("width", 64)), int(p.input.get("height", 64)))
        return solid_png((digest[0], digest[1], digest[2]), width, height)

    def _interpolated(self, p: _Prediction) -> bytes:
        """FILM's answer for prediction `p` (see the module docstring), made once."""
        with self._lock:
            made = self._clips.get(p.id)
        if made is None:
            first, second = self._file(p.input["frame1"]), self._file(p.input["frame2"])
            with tempfile.TemporaryDirectory(prefix="shd-memory-film-") as tmp:
                a, b = Path(tmp) / "frame1.png", Path(tmp) / "frame2.png"
                a.write_bytes(first)
                b.write_bytes(second)
                try:
                    made = inbetweens.blend_clip(media.find_ffmpeg(), a, b, work=Path(tmp) / "out",
                                                 times=int(p.input.get("times_to_interpolate", 1)),
                                                 size=png.size(first) or (64, 64))
                except MediaError as e:
                    raise ModelFailed(f"model error: cannot interpolate: {e.reason}") from None
            with self._lock:
                self._clips[p.id] = made
        return made


class MemoryRemote(Remote):
    """A client of a MemoryService. A create waits up to `create_wait` seconds of the service's clock for the
    result, as Replicate's `Prefer: wait` does."""

    def __init__(self, service: MemoryService, token: str | None = None, *, create_wait: float = 5.0):
        self.service = service
        self.create_wait = create_wait
        self._token = service.token if token is None else token

    def create(self, ref: str, input: Mapping[str, Any]) -> Status:
        self.service._admit(self._token)
        p = self.service._create(ref, input)
        self.service.clock.sleep(max(0.0, min(self.create_wait, p.done_at - self.service.clock.now())))
        return self.service._status(p)

    def get(self, remote_id: str) -> Status:
        self.service._admit(self._token)
        return self.service._status(self.service._find(remote_id))

    def cancel(self, remote_id: str) -> None:
        self.service._admit(self._token)
        self.service._cancel(remote_id)

    def find(self, ref: str, input: Mapping[str, Any], created_after: float) -> Status | None:
        self.service._admit(self._token)
        found = self.service._lookup(ref, ledger_form(input), created_after)
        return None if found is None else self.service._status(found)

    def upload(self, path: Path) -> str:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise Rejected(f"{path}: cannot read frame: {e.strerror}") from None
        self.service._admit(self._token)
        return self.service._store_file(path.name, data)

    def fetch(self, item: Any) -> bytes:
        self.service._admit(self._token)
        return self.service._download(item)

    def failure(self, status: Status) -> BackendError:
        p = self.service._find(status.remote_id)
        return p.failure or Transient(f"model error (transient): {status.error or 'no reason given'}")

    def check_auth(self) -> None:
        self.service._admit(self._token)

    def set_token(self, token: str) -> None:
        self._token = token


@functools.lru_cache(maxsize=64)
def solid_png(rgb: tuple[int, int, int], width: int, height: int) -> bytes:
    """A `width` x `height` 8-bit RGB PNG of one colour."""
    return png.encode(width, height, [bytes(rgb) * width] * height)

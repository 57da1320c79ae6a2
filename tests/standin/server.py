"""``StandIn``: a loopback HTTPS server that behaves like api.replicate.com for the ``replicate`` 1.0.7 client.

Typical use::

    with StandIn(tmp_path) as s:
        for key, value in s.env().items():
            monkeypatch.setenv(key, value)  # replicate 1.0.7 ignores Client(verify=...): use SSL_CERT_FILE
        client = replicate.Client()
        out = client.run(SDXL, input={"prompt": "a cat", "width": 64, "height": 64, "seed": 1})

See docs/replicate-api.md §10 for the behaviour this reproduces, and the docstrings of :meth:`StandIn.inject`,
:meth:`StandIn.override` and :meth:`StandIn.fail_predictions` for fault injection.
"""

from __future__ import annotations

import base64
import os
import pathlib
import ssl
import threading
import time
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, Callable, Iterable

import trustme

from . import models as M
from .wire import Request
from .faults import FaultBook, FaultRule, OutcomeRule, RateLimiter
from .store import FileRecord, PredictionRecord, RecordedRequest
from .transport import StandInHTTPServer


@dataclass
class Options:
    """Server-wide behaviour switches (change at runtime with :meth:`StandIn.configure`).

    * ``sync_status``: status of a ``Prefer: wait`` create that finished successfully in time: ``"succeeded"``,
      or ``"processing"`` (the real API's quirk; ``run()`` then returns the output without polling).
    * ``wait_timeout_status``: status of a ``Prefer: wait`` create that timed out: ``"starting"`` (documented) or
      ``"processing"`` (with ``output: null``, reproducing replicate-python#385).
    * ``sync_data_uris``: a ``Prefer: wait`` create that succeeded in time carries its files as ``data:`` URIs
      instead of delivery URLs (what the API did around October 2024).
    * ``output_ttl``: seconds after completion before output/logs/input are removed (default 3600).
    * ``file_ttl``: lifetime of uploaded files (default 24 h); ``max_file_size``: 413 above this many bytes.
    * ``page_size``: predictions per ``GET /v1/predictions`` page (100 like the real API).
    * ``queue_delay`` / ``run_time``: default latencies for models without a :meth:`StandIn.set_latency`.
    * ``list_data_inputs``: False: the predictions list leaves out inputs that were sent as ``data:`` URIs (what
      the real API is reported to do), so a create whose answer was lost cannot be found by such an input.
    * ``delivery_host``: None: outputs are served by the API's own listener; an address (``"127.0.0.1"``: another
      port of the API's host, ``"127.0.0.2"``: another host) serves them from a second listener there, as
      ``replicate.delivery`` is another host than ``api.replicate.com``. Read when the server starts.
    * ``delivery_auth``: True: an output download without the API token in ``Authorization`` gets 401.
    """

    sync_status: str = "succeeded"
    wait_timeout_status: str = "starting"
    sync_data_uris: bool = False
    output_ttl: float = 3600.0
    file_ttl: float = 24 * 3600.0
    max_file_size: int = 100 * 1024 * 1024
    page_size: int = 100
    queue_delay: float = 0.005
    run_time: float = 0.02
    list_data_inputs: bool = True
    delivery_host: str | None = None
    delivery_auth: bool = False


class StandIn:
    """A fake Replicate API on ``https://127.0.0.1:PORT`` with fault injection and full request recording.

    Args:
        workdir: where the CA certificate (``standin-ca.pem``) is written.
        token: the accepted API token (``Bearer`` or ``Token`` scheme); change with :meth:`set_token`.
        port: TCP port (0 = any free port).
        seed: seeds the RNG used for probabilistic faults/overrides and for SDXL's random seeds.
        latencies: ``{"owner/name": (queue_delay, run_time)}``.
        tls: serve HTTPS (default); False serves plain HTTP (outputs then stay ``str`` in the client).
        rate_limits: keyword arguments for :meth:`set_rate_limit` (default: real limits, 600/3000 per min).
        **options: any :class:`Options` field (``sync_status``, ``output_ttl``, ``max_file_size`` ...).
    """

    def __init__(self, workdir: pathlib.Path, token: str = "r8_test", *, port: int = 0, seed: int = 0,
                 latencies: dict[str, tuple[float, float]] | None = None, tls: bool = True,
                 rate_limits: dict[str, Any] | None = None, **options: Any) -> None:
        self.workdir = pathlib.Path(workdir)
        self.token = token
        self.options = Options(**options)
        self._port, self._tls = port, tls
        self._cond = threading.Condition(threading.RLock())
        self._faults = FaultBook(seed)
        self._limiter = RateLimiter()
        if rate_limits:
            self.set_rate_limit(**rate_limits)
        self._latency: dict[str, tuple[float, float, float | None]] = {}
        self._predict_time: dict[str, float] = {}
        for model, (queue_delay, run_time) in (latencies or {}).items():
            self.set_latency(model, queue_delay, run_time)
        self._predictions: dict[str, PredictionRecord] = {}
        self._all_predictions: list[PredictionRecord] = []
        self._files: dict[str, FileRecord] = {}
        self._requests: list[RecordedRequest] = []
        self._create_count = 0
        self._stopping = False
        self._webhook_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self._server: StandInHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._delivery: StandInHTTPServer | None = None
        self.url = ""
        self.delivery_url = ""  # where outputs are served from (``url`` unless ``delivery_host`` is set)
        self.cert_path = self.workdir / "standin-ca.pem"

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> "StandIn":
        """Create the certificate, bind, and serve in a background thread."""
        context = None
        if self._tls:
            self.workdir.mkdir(parents=True, exist_ok=True)
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(self.cert_path))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.set_alpn_protocols(["http/1.1"])
            ca.issue_cert("127.0.0.1", "localhost", "127.0.0.2").configure_cert(context)
        self._server = StandInHTTPServer(("127.0.0.1", self._port), self, context)
        scheme = "https" if self._tls else "http"
        self.url = self.delivery_url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="standin-accept", daemon=True)
        self._thread.start()
        if self.options.delivery_host:
            self._delivery = StandInHTTPServer((self.options.delivery_host, 0), self, context, delivery_only=True)
            self.delivery_url = f"{scheme}://{self.options.delivery_host}:{self._delivery.server_address[1]}"
            threading.Thread(target=self._delivery.serve_forever, kwargs={"poll_interval": 0.05},
                             name="standin-delivery", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and release waiting ``Prefer: wait`` requests."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for server in (self._delivery, self._server):
            if server is not None:
                server.shutdown()
                server.server_close()
                server.close_all_connections()
        self._delivery = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Environment for a ``replicate`` client pointed at this server (no ``SSL_CERT_FILE`` in plain-HTTP
        mode: httpx loads it eagerly, even for http URLs)."""
        env = {"REPLICATE_BASE_URL": self.url, "SSL_CERT_FILE": str(self.cert_path),
               "REPLICATE_API_TOKEN": self.token, "REPLICATE_POLL_INTERVAL": "0.01"}
        if not self._tls:
            del env["SSL_CERT_FILE"]
        return env

    # -- configuration ------------------------------------------------------------------------------------------
    def set_latency(self, model: str, queue_delay: float, run_time: float, output_ttl: float | None = None) -> None:
        """Latencies (seconds in ``starting`` and in ``processing``) for future predictions of ``owner/name``;
        optionally a per-model output TTL. FILM's ``processing`` lasts ``run_time`` per run of its network:
        2^k - 1 runs for times_to_interpolate k."""
        model = model.split(":", 1)[0]
        if model not in M.BY_NAME:
            raise ValueError(f"unknown model {model!r}; known: {sorted(M.BY_NAME)}")
        with self._cond:
            self._latency[model] = (float(queue_delay), float(run_time),
                                    None if output_ttl is None else float(output_ttl))

    def set_predict_time(self, model: str, seconds: float | None) -> None:
        """The ``metrics.predict_time`` that future predictions of ``owner/name`` report once they have run to their
        end (succeeded or failed): the real API reports the seconds its hardware worked, which is what is billed;
        a fixed figure makes cost tests exact whatever the machine's timing (FILM's: per run of its network, so
        2^k - 1 times it). A canceled prediction still reports the time it really ran. ``None``: every prediction
        reports the time it ran (the default)."""
        model = model.split(":", 1)[0]
        if model not in M.BY_NAME:
            raise ValueError(f"unknown model {model!r}; known: {sorted(M.BY_NAME)}")
        with self._cond:
            if seconds is None:
                self._predict_time.pop(model, None)
            else:
                self._predict_time[model] = float(seconds)

    def configure(self, **options: Any) -> None:
        """Change :class:`Options` fields at runtime (e.g. ``configure(sync_status="processing")``)."""
        known = {f.name for f in fields(Options)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(known)}")
        with self._cond:
            for key, value in options.items():
                setattr(self.options, key, value)

    def set_token(self, token: str) -> None:
        """Accept only ``token`` from now on (others get 401)."""
        self.token = token

    def set_rate_limit(self, creates_per_min: float | None = None, others_per_min: float | None = None, *,
                       scale: float = 1.0, low_credit: bool = False, enabled: bool = True,
                       burst: float | None = None) -> None:
        """Reset the token buckets.  Defaults are the real 600 creates/min and 3000 other calls/min, times
        ``scale``; ``burst`` is the bucket size (default: one minute's worth); ``low_credit`` adds the low-credit
        1/s and 6/min limits to creates; ``enabled=False`` turns limiting off.  Over the limit -> 429."""
        creates = creates_per_min if creates_per_min is not None else 600 * scale
        others = others_per_min if others_per_min is not None else 3000 * scale
        self._limiter.configure(creates, others, enabled=enabled, low_credit=low_credit, burst=burst)

    # -- fault injection ----------------------------------------------------------------------------------------
    def inject(self, route: str, kind: str = "status", *, status: int | None = None, body: Any = None,
               headers: dict[str, str] | None = None, retry_after: int | float | str | None = None,
               retry_after_date: float | None = None, delay: float = 0.0, chunks: int = 8,
               calls: Iterable[int] | None = None, times: int | None = None,
               probability: float | None = None) -> FaultRule:
        """Script responses for requests on ``route``: ``"METHOD /path-glob"`` (fnmatch on the path without
        query; ``*`` also crosses ``/``), e.g. ``"POST /v1/predictions"`` (creates only),
        ``"GET /v1/predictions/*"``, ``"GET /delivery/*"``, ``"* /v1/*"``.

        ``kind``: ``status`` (needs ``status``; realistic default bodies, e.g. the 429 throttle text),
        ``non_json`` (HTML body, ``status`` default 200), ``delay`` (sleep ``delay`` s then answer normally),
        ``close_before`` (drop the connection before handling: nothing created), ``close_after`` (handle, e.g.
        create the prediction, then drop the connection), ``truncate`` (half the body, then drop),
        ``slow_body`` (body in ``chunks`` pieces over ``delay`` s).  ``delay`` also delays the other kinds.

        ``retry_after`` sets ``Retry-After`` (int seconds, or any text verbatim); ``retry_after_date`` sets it to
        an ISO-8601 datetime that many seconds ahead.  ``body``: dict (problem+json), or str/bytes (raw).

        Selection: ``calls`` = 1-based call numbers among requests on the route since this rule was added
        (default all), ``times`` = at most this many firings, ``probability`` = chance per call (seeded RNG).
        Earlier rules win.  Returns the rule (``.hits``, ``.seen``; remove with :meth:`remove_rule`).
        """
        rule = FaultRule(route=route, kind=kind, status=status, body=body, headers=dict(headers or {}),
                         retry_after=retry_after, retry_after_date=retry_after_date, delay=delay, chunks=chunks,
                         calls=frozenset(calls) if calls is not None else None, times=times,
                         probability=probability)
        return self._faults.add_fault(rule)

    def override(self, outcome: str = "succeeded", *, error: str | None = None, model: str | None = None,
                 match: Callable[[dict[str, Any]], bool] | None = None, prompt_contains: str | None = None,
                 nth: Iterable[int] | None = None, times: int | None = None, probability: float | None = None,
                 queue_delay: float | None = None, run_time: float | None = None, num_outputs: int | None = None,
                 output_null: bool = False, missing_version: bool = False, processing_on_timeout: bool = False,
                 partial_output: bool = False) -> OutcomeRule:
        """Override how future predictions end.

        Matching (all given must hold): ``model`` (``"owner/name"``), ``match(input_with_defaults) -> bool``,
        ``prompt_contains`` (substring of ``input["prompt"]``), ``nth`` (1-based positions among creates of
        ``model``, or of all models, counted from when the rule was added), ``probability`` (seeded), and at
        most ``times`` firings.  The first matching rule wins.

        Effects: ``outcome`` = terminal status (``succeeded``, ``failed`` [with ``error``, default the "code: PA"
        interruption], ``canceled`` [server-side], ``aborted`` [unknown to 1.0.7 -> ValidationError], or
        ``stuck`` [stays ``starting`` until canceled]); ``queue_delay``/``run_time`` (slow runs);
        ``num_outputs`` (SDXL/flux return fewer images); ``output_null`` (succeeded with ``output: null``);
        ``missing_version`` (JSON without ``version``); ``processing_on_timeout`` (+ ``partial_output``): a
        ``Prefer: wait`` that times out answers ``processing`` with ``output`` null (or the first image).
        """
        if model is not None:
            model = model.split(":", 1)[0]
        rule = OutcomeRule(outcome=outcome, error=error, model=model, match=match, prompt_contains=prompt_contains,
                           nth=frozenset(nth) if nth is not None else None, times=times, probability=probability,
                           queue_delay=queue_delay, run_time=run_time, num_outputs=num_outputs,
                           output_null=output_null, missing_version=missing_version,
                           processing_on_timeout=processing_on_timeout, partial_output=partial_output)
        return self._faults.add_outcome(rule)

    def fail_predictions(self, error: str = "Prediction interrupted; please retry (code: PA)", **match: Any
                         ) -> OutcomeRule:
        """Make matching predictions end ``failed`` with ``error`` (the client raises ``ModelError(error)``).
        ``match`` takes the matching/timing keywords of :meth:`override` (``model``, ``match``,
        ``prompt_contains``, ``nth``, ``times``, ``probability``, ``queue_delay``, ``run_time``)."""
        return self.override("failed", error=error, **match)

    def remove_rule(self, rule_id: int) -> None:
        """Remove one fault/outcome rule by its ``id``."""
        self._faults.remove(rule_id)

    def clear_faults(self) -> None:
        """Remove every fault and outcome rule."""
        self._faults.clear()

    def expire_outputs(self) -> int:
        """Expire the data of every prediction that is terminal now (output/logs/input removed,
        ``data_removed: true``, deliveries 404).  Returns how many were expired."""
        now = time.time()
        count = 0
        with self._cond:
            for rec in self._predictions.values():
                if rec.is_terminal(now):
                    rec.expired_at = now
                    count += 1
        return count

    def forget(self, pred_id: str) -> None:
        """Make a prediction vanish: GET/cancel give 404, it leaves listings and its files 404.  The
        recording (:meth:`predictions`, :meth:`count_creates`) keeps it, flagged ``forgotten``."""
        with self._cond:
            rec = self._predictions.pop(pred_id, None)
            if rec is None:
                raise KeyError(pred_id)
            rec.forgotten = True

    # -- recording ----------------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every non-control request received, in arrival order (a copy)."""
        with self._cond:
            return list(self._requests)

    def requests_matching(self, method: str | None = None, path_prefix: str = "") -> list[RecordedRequest]:
        """Recorded requests with this method (any if None) whose path starts with ``path_prefix``."""
        return [r for r in self.requests
                if (method is None or r.method == method.upper()) and r.path.startswith(path_prefix)]

    def predictions(self, model: str | None = None, status: str | None = None) -> list[PredictionRecord]:
        """Every prediction created (including forgotten ones), oldest first, filtered by ``owner/name`` and
        current status.  Records are live: ``.status``/``.history()`` reflect the present."""
        model = model.split(":", 1)[0] if model else None
        now = time.time()
        with self._cond:
            recs = list(self._all_predictions)
        return [r for r in recs
                if (model is None or r.model == model) and (status is None or r.status_at(now) == status)]

    def prediction(self, pred_id: str) -> PredictionRecord:
        """The record of one prediction (forgotten ones included)."""
        for rec in self.predictions():
            if rec.id == pred_id:
                return rec
        raise KeyError(pred_id)

    def count_creates(self, model: str | None = None) -> int:
        """How many predictions were created (successful creates, by ``owner/name`` if given)."""
        return len(self.predictions(model=model))

    @property
    def files(self) -> list[FileRecord]:
        """Uploaded files still stored (not deleted)."""
        with self._cond:
            return list(self._files.values())

    # -- internals used by api/transport ------------------------------------------------------------------------
    def _record_request(self, req: Request) -> RecordedRequest:
        rec = RecordedRequest(req.method, req.path, req.query, req.headers, req.body, time.time())
        with self._cond:
            self._requests.append(rec)
        return rec

    def _billed_time(self, model: str) -> float | None:
        with self._cond:
            return self._predict_time.get(model)

    def _timing_for(self, model: str) -> tuple[float, float, float]:
        with self._cond:
            queue_delay, run_time, ttl = self._latency.get(model, (self.options.queue_delay, self.options.run_time,
                                                                   None))
            return queue_delay, run_time, self.options.output_ttl if ttl is None else ttl

    def _live_file(self, file_id: str) -> FileRecord | None:
        with self._cond:
            rec = self._files.get(file_id)
        return rec if rec is not None and rec.expires > time.time() else None

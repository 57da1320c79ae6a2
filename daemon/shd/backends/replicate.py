"""The Replicate implementation of the backend interfaces, through the official `replicate` client (1.0.x).

How it calls the API (see ../shared/docs/replicate-api.md §9):
- create by version with a bounded `Prefer: wait=N` (a create without it has no timeout at all);
- poll `GET /v1/predictions/{id}` (the scheduler's loop, with its own deadline);
- upload frames as named `.png` files through `POST /v1/files` with a timeout (the client's `files.create` has
  none), or send one of up to `inline_max_bytes` inline as a `data:` URI when configured;
- accept outputs as `FileOutput`, `data:` URIs and plain URL strings, and download them at once; the token goes
  with a download only to Replicate's own hosts (the API's host, `replicate.delivery` and its subdomains), never to
  another host an output may name (the client's `FileOutput.read` would send it anywhere).

The client's `ReplicateError` drops response headers, so a transport wrapper remembers the rate-limit headers of
the last 429 this thread saw; `Retry-After`, else `ratelimit-reset`, else the body's "resets in ~Ns" hint.
The API token never appears in an error message: errors carry the server's words and the status only.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.file import _create_file_params
from replicate.helpers import FileOutput, transform_output

from shd.backends.base import Remote, Status, ledger_form
from shd.errors import (
    AuthFailed,
    BackendError,
    ModelFailed,
    OutputGone,
    RateLimited,
    Rejected,
    Transient,
)

_local = threading.local()

DELIVERY_DOMAIN = "replicate.delivery"  # where Replicate serves outputs (it asks for the token there)

# Model errors Replicate itself calls transient, and the ones a new seed may get around.
TRANSIENT_MODEL_ERRORS = ("code: PA", "E9828", "please retry", "out of memory", "timed out")
NEW_SEED_MODEL_ERRORS = ("NSFW",)


# A worker thread may sit idle longer than httpx's default 5 s keep-alive; a new TLS handshake for every request
# after a pause costs more CPU than the request. A connection the server has closed meanwhile is noticed and
# replaced by httpcore before it is reused.
KEEPALIVE = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=60.0)


class _HeaderMemo(httpx.HTTPTransport):
    """Remembers the rate-limit headers of the last 429 seen by this thread (the client's error drops them)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if response.status_code == 429:
            _local.rate_headers = {k.lower(): v for k, v in response.headers.items()
                                   if k.lower() in ("retry-after", "ratelimit-reset", "ratelimit-remaining")}
        return response


def retry_after_hint(headers: Mapping[str, str], detail: str | None, now: float | None = None) -> float | None:
    """Seconds to wait after a 429: Retry-After (seconds or a date), else ratelimit-reset, else the body's hint."""
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                from email.utils import parsedate_to_datetime

                try:
                    when = parsedate_to_datetime(value)
                except (TypeError, ValueError):
                    when = None
            if when is not None:
                return max(0.0, when.timestamp() - (now if now is not None else time.time()))
    reset = headers.get("ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset))
        except ValueError:
            pass
    m = re.search(r"(?:in ~?|available in )(\d+(?:\.\d+)?)\s*(?:s\b|second)", detail or "")
    return float(m.group(1)) if m else None


def replicate_host(url: httpx.URL, api: httpx.URL) -> bool:
    """Whether `url` is one of Replicate's own hosts, which may see the token: the API's host (any port) or
    `replicate.delivery` and its subdomains, over HTTPS (or plain HTTP when the API itself is, as a test server)."""
    host = url.host
    ours = host == api.host or host == DELIVERY_DOMAIN or host.endswith("." + DELIVERY_DOMAIN)
    return ours and url.scheme in ("https", api.scheme)


def classify(exc: Exception, *, creating: bool = False) -> BackendError:
    """Map what the client raised to the BackendError that says what to do next."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, ReplicateError):
        status = exc.status or 0
        what = exc.detail or exc.title or f"HTTP {status}"
        what = " ".join(str(what).split())
        if status == 429:
            headers = getattr(_local, "rate_headers", {})
            _local.rate_headers = {}
            return RateLimited(f"rate limited (429): {what}", retry_after_hint(headers, exc.detail))
        if status in (401, 402, 403):
            return AuthFailed(f"Replicate refused the credentials ({status}): {what}")
        if status >= 500 or status in (408, 409):
            return Transient(f"Replicate error {status}: {what}")
        return Rejected(f"Replicate rejected the request ({status}): {what}")
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        if code in (404, 410):
            return OutputGone(f"output file is gone ({code})")
        if code in (401, 403):
            return AuthFailed(f"output download refused ({code})")
        return Transient(f"output download failed ({code})")
    if isinstance(exc, httpx.TransportError):
        # A create whose request went out may have created the prediction even though no answer came back. One
        # that never got a connection reached nothing: the API is unreachable (not billed, not a paid attempt).
        unreachable = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
        sent = not (unreachable or isinstance(exc, httpx.PoolTimeout))
        return Transient(f"network error: {type(exc).__name__}: {exc}", maybe_created=creating and sent,
                         unreachable=unreachable)
    if isinstance(exc, (ValueError, KeyError, TypeError)):  # malformed JSON / unexpected shape
        return Transient(f"unexpected response: {type(exc).__name__}: {exc}", maybe_created=creating)
    return Transient(f"{type(exc).__name__}: {exc}", maybe_created=creating)


def model_failure(error: str | None) -> BackendError:
    """The error for a prediction that finished as `failed` with this message."""
    text = " ".join((error or "").split())
    if not text or any(t.lower() in text.lower() for t in TRANSIENT_MODEL_ERRORS):
        return Transient(f"model error (transient): {text or 'no reason given'}")
    if any(t.lower() in text.lower() for t in NEW_SEED_MODEL_ERRORS):
        return ModelFailed(f"model error: {text}", retry_with_new_seed=True)
    return ModelFailed(f"model error: {text}")


def _status(data: Mapping[str, Any]) -> Status:
    metrics = data.get("metrics") or {}
    return Status(
        remote_id=str(data["id"]),
        status=str(data.get("status") or "unknown"),
        output=data.get("output"),
        error=data.get("error"),
        predict_time=metrics.get("predict_time") if isinstance(metrics, Mapping) else None,
    )


def _version(ref: str) -> str:
    _, _, version = ref.partition(":")
    return version


class ReplicateRemote(Remote):
    """Replicate's HTTP API. `base_url` and the token default as the client's do (REPLICATE_BASE_URL...)."""

    def __init__(self, token: str, *, create_wait: int = 5, request_timeout: float = 30.0,
                 base_url: str | None = None, inline_max_bytes: int = 0):
        self.create_wait = create_wait
        self.inline_max_bytes = inline_max_bytes
        self.request_timeout = request_timeout
        self._timeout = httpx.Timeout(request_timeout, connect=min(10.0, request_timeout))
        self._token = token
        self._base_url = base_url
        self._threads = threading.local()
        self._clients: weakref.WeakSet[Client] = weakref.WeakSet()  # a finished thread's goes too
        self._clients_lock = threading.Lock()

    @property
    def client(self) -> Client:
        """This thread's client. One per worker thread: a single httpx pool shared by dozens of threads spends
        more CPU scanning its connections under its lock than sending the requests (measured at concurrency 32)."""
        client: Client | None = getattr(self._threads, "client", None)
        if client is None:
            client = Client(api_token=self._token, base_url=self._base_url, timeout=self._timeout,
                                      transport=_HeaderMemo(), limits=KEEPALIVE)
            self._threads.client = client
            with self._clients_lock:
                self._clients.add(client)
        return client

    def set_token(self, token: str) -> None:
        """Use a new token from now on (after a reload or a credential fix), in every thread's client."""
        with self._clients_lock:
            self._token = token
            for client in self._clients:
                client._client.headers["Authorization"] = f"Bearer {token}"

    def create(self, ref: str, input: Mapping[str, Any]) -> Status:
        try:
            p = self.client.predictions.create(version=_version(ref), input=dict(input), wait=self.create_wait)
        except Exception as e:  # noqa: BLE001 - every failure is classified, none escapes unmapped
            raise classify(e, creating=True) from None
        return _status(p.dict() if hasattr(p, "dict") else vars(p))

    def get(self, remote_id: str) -> Status:
        try:
            # The raw GET (not predictions.get) so a status this client version doesn't know (e.g. 'aborted')
            # still reaches the scheduler instead of failing validation.
            resp = self.client._request("GET", f"/v1/predictions/{remote_id}")
            return _status(resp.json())
        except ReplicateError as e:
            if e.status == 404:
                raise OutputGone(f"prediction {remote_id} no longer exists on the server") from None
            raise classify(e) from None
        except Exception as e:  # noqa: BLE001 - classified: every failure leaves as a BackendError
            raise classify(e) from None

    def cancel(self, remote_id: str) -> None:
        try:
            self.client._request("POST", f"/v1/predictions/{remote_id}/cancel")
        except Exception as e:  # noqa: BLE001 - classified: every failure leaves as a BackendError
            raise classify(e) from None

    def find(self, ref: str, input: Mapping[str, Any], created_after: float) -> Status | None:
        version = _version(ref)
        since = datetime.fromtimestamp(created_after - 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        cursor: str | None = "/v1/predictions?created_after=" + since
        want = json.dumps(ledger_form(input), sort_keys=True)
        try:
            for _ in range(10):  # 100 per page, newest first: 1000 recent predictions is plenty
                if not cursor:
                    break
                data = self.client._request("GET", cursor).json()
                for p in data.get("results", []):
                    if p.get("version") == version and (
                            json.dumps(ledger_form(p.get("input") or {}), sort_keys=True) == want):
                        return _status(p)
                cursor = data.get("next")
        except Exception as e:  # noqa: BLE001 - classified: every failure leaves as a BackendError
            raise classify(e) from None
        return None

    def upload(self, path: Path) -> str:
        """A frame up to `inline_max_bytes` goes inside the request as a `data:` URI (no upload request, nothing
        left in the Files API; but Replicate may not list data: inputs back, and then `find` cannot match such a
        create); a larger one is uploaded first."""
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            if path.stat().st_size <= self.inline_max_bytes:
                return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
            fh = path.open("rb")  # streamed: a large frame is not held in memory by each of the worker threads
        except OSError as e:
            raise Rejected(f"{path}: cannot read frame: {e.strerror}") from None
        try:
            with fh:
                resp = self.client._request("POST", "/v1/files", timeout=self._timeout,
                                            **_create_file_params(fh, filename=path.name, content_type=mime))
            return str(resp.json()["urls"]["get"])
        except Exception as e:  # noqa: BLE001 - classified: every failure leaves as a BackendError
            raise classify(e) from None

    def fetch(self, item: Any) -> bytes:
        if isinstance(item, FileOutput):
            item = item.url
        try:
            if isinstance(item, str) and item.startswith("data:"):
                data: bytes = transform_output(item, self.client).read()
                return data
            if isinstance(item, str) and item.startswith(("https:", "http:")):
                return self._download(item)
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 - classified: every failure leaves as a BackendError
            raise classify(e) from None
        raise ModelFailed(f"unexpected output: {str(item)[:80]!r}")

    def _download(self, url: str) -> bytes:
        """GET an output; with the token only if the URL is one of Replicate's own hosts (`replicate_host`)."""
        http = self.client._client
        request = http.build_request("GET", url, timeout=self._timeout)
        ours = replicate_host(request.url, http.base_url)
        if not ours:
            del request.headers["Authorization"]
        response = http.send(request)
        if not ours and response.status_code in (401, 403):
            raise Rejected(f"output {url[:160]}: its host asks for credentials, and shd sends the Replicate token "
                           f"only to Replicate's own hosts (the API's, {DELIVERY_DOMAIN})")
        response.raise_for_status()
        return response.content

    def failure(self, status: Status) -> BackendError:
        return model_failure(status.error)

    def check_auth(self) -> None:
        try:
            self.client._request("GET", "/v1/predictions")
        except Exception as e:  # noqa: BLE001 - classified: every failure leaves as a BackendError
            raise classify(e) from None


__all__ = ["ReplicateRemote", "classify", "model_failure", "replicate_host", "retry_after_hint"]

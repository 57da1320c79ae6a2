"""The Replicate ``/v1`` API of the stand-in as request -> response functions (files/delivery: :mod:`files`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import mimetypes
import re
import time
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, unquote_to_bytes, urlencode, urlsplit

from . import files
from . import models as M
from . import schemas as S
from .faults import FaultRule, throttle_body
from .wire import INVALID_VERSION, NOT_FOUND, UNAUTHENTICATED, Request, Response, problem
from .store import PredictionRecord, new_prediction_id, parse_rfc3339, rfc3339

if TYPE_CHECKING:
    from .server import StandIn

JSON = dict[str, Any]
_PREFER = re.compile(r"\s*wait(?:\s*=\s*(\d+))?\s*", re.I)


_DEFAULT_FAULT_BODIES: dict[int, JSON] = {
    401: UNAUTHENTICATED,
    404: NOT_FOUND,
    410: {"detail": "The requested resource is no longer available.", "status": 410},
    413: {"detail": "Files must be less than 100MB in size", "status": 413},
    422: {"title": "Input validation failed", "detail": "- input: injected validation failure\n", "status": 422,
          "invalid_fields": [{"type": "injected", "field": "input", "description": "injected validation failure"}]},
    500: {"title": "Internal Server Error", "detail": "Internal server error", "status": 500},
    502: {"title": "Bad Gateway", "detail": "Bad gateway", "status": 502},
    503: {"title": "Service Unavailable", "detail": "Service temporarily unavailable", "status": 503},
    504: {"title": "Gateway Timeout", "detail": "Gateway timeout", "status": 504},
}


def fault_response(rule: FaultRule) -> Response:
    """The scripted response of a ``status`` or ``non_json`` fault."""
    headers = dict(rule.headers)
    if rule.retry_after is not None:
        headers["Retry-After"] = str(int(rule.retry_after)) if isinstance(rule.retry_after, (int, float)) \
            else rule.retry_after
    if rule.retry_after_date is not None:
        headers["Retry-After"] = rfc3339(time.time() + rule.retry_after_date).replace("Z", "+00:00")
    if rule.kind == "non_json":
        body = rule.body if rule.body is not None else "<html><body><h1>502 Bad Gateway</h1></body></html>"
        raw = body.encode() if isinstance(body, str) else bytes(body)
        return Response(rule.status or 200, raw, {"Content-Type": "text/html", **headers})
    status = int(rule.status or 500)
    if rule.body is not None and not isinstance(rule.body, dict):
        raw = rule.body.encode() if isinstance(rule.body, str) else bytes(rule.body)
        return Response(status, raw, {"Content-Type": "text/plain", **headers})
    if rule.body is not None:
        body = rule.body
    elif status == 429:
        wait = int(rule.retry_after) if isinstance(rule.retry_after, (int, float)) else 1
        body = throttle_body(max(wait, 1))
    else:
        body = _DEFAULT_FAULT_BODIES.get(status, {"detail": f"Injected error {status}", "status": status})
    return Response.json(status, body, headers)


def _authorized(s: "StandIn", headers: dict[str, str]) -> bool:
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    return scheme.lower() in ("bearer", "token") and token.strip() == s.token


def _is_create(method: str, path: str) -> bool:
    return method == "POST" and (path == "/v1/predictions" or bool(
        re.fullmatch(r"/v1/(models|deployments)/[^/]+/[^/]+/predictions", path)))


def handle(s: "StandIn", req: Request) -> Response:
    """Answer one (non-control) request: auth, rate limit, then route."""
    if req.path.startswith("/delivery/"):
        if s.options.delivery_auth and not _authorized(s, req.headers):
            return Response.json(401, UNAUTHENTICATED)
        return files.delivery(s, req)
    if not req.path.startswith("/v1/"):
        return Response.json(404, NOT_FOUND)
    if not _authorized(s, req.headers):
        return Response.json(401, UNAUTHENTICATED)
    allowed, remaining, reset = s._limiter.take("create" if _is_create(req.method, req.path) else "other")
    if allowed:
        resp = route(s, req)
    else:
        resp = Response.json(429, throttle_body(reset))
    resp.headers.update({"ratelimit-remaining": str(remaining), "ratelimit-reset": str(reset)})
    return resp


Handler = Callable[..., Response]


def _routes() -> list[tuple[re.Pattern[str], dict[str, Handler]]]:
    table: list[tuple[str, dict[str, Handler]]] = [
        (r"/v1/predictions", {"GET": list_predictions, "POST": create}),
        (r"/v1/predictions/([^/]+)", {"GET": get_prediction}),
        (r"/v1/predictions/([^/]+)/cancel", {"POST": cancel}),
        (r"/v1/models/([^/]+)/([^/]+)", {"GET": get_model}),
        (r"/v1/models/([^/]+)/([^/]+)/predictions", {"POST": create_for_model}),
        (r"/v1/models/([^/]+)/([^/]+)/versions", {"GET": list_versions}),
        (r"/v1/models/([^/]+)/([^/]+)/versions/([^/]+)", {"GET": get_version}),
        (r"/v1/deployments/([^/]+)/([^/]+)/predictions", {"POST": lambda s, r, o, n: Response.json(404, NOT_FOUND)}),
        (r"/v1/files", {"GET": files.list_files, "POST": files.create_file}),
        (r"/v1/files/([^/]+)", {"GET": files.get_file, "DELETE": files.delete_file}),
        (r"/v1/webhooks/default/secret", {"GET": lambda s, r: Response.json(200, {"key": s._webhook_secret})}),
        (r"/v1/account", {"GET": lambda s, r: Response.json(200, {"type": "user", "username": "standin",
                                                                  "name": "Stand In", "github_url": None})}),
    ]
    return [(re.compile(pattern), methods) for pattern, methods in table]


_ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = []


def route(s: "StandIn", req: Request) -> Response:
    """Dispatch an authenticated, rate-limited ``/v1`` request."""
    if not _ROUTES:
        _ROUTES.extend(_routes())
    for pattern, methods in _ROUTES:
        m = pattern.fullmatch(req.path)
        if m:
            fn = methods.get(req.method)
            if fn is None:
                return problem(405, f'Method "{req.method}" not allowed.')
            return fn(s, req, *m.groups())
    return Response.json(404, NOT_FOUND)


# -- predictions ------------------------------------------------------------------------------------------------
def _body(req: Request) -> JSON | Response:
    try:
        body = json.loads(req.body or b"{}")
    except ValueError as exc:
        return problem(400, f"JSON parse error - {exc}")
    return body if isinstance(body, dict) else problem(400, "Request body must be a JSON object")


def create(s: "StandIn", req: Request) -> Response:
    """``POST /v1/predictions``."""
    body = _body(req)
    if isinstance(body, Response):
        return body
    version = body.get("version")
    model = M.resolve_version(version) if isinstance(version, str) else None
    if model is None:
        return Response.json(422, INVALID_VERSION)
    return _create(s, req, model, body)


def create_for_model(s: "StandIn", req: Request, owner: str, name: str) -> Response:
    """``POST /v1/models/{owner}/{name}/predictions``: official models only."""
    model = M.BY_NAME.get(f"{owner}/{name}")
    if model is None or not model.official:
        return Response.json(404, NOT_FOUND)
    body = _body(req)
    return body if isinstance(body, Response) else _create(s, req, model, body)


def _decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("malformed data URI")
    if header.endswith(";base64"):
        return base64.b64decode(payload, validate=True)
    return unquote_to_bytes(payload)


def _resolve_files(s: "StandIn", model: M.FakeModel, inp: JSON) -> tuple[M.Inputs, dict[str, str], str | None]:
    """File inputs -> bytes and the name the model sees (data: URIs by their type, as cog names them; this server's
    files by their upload name, deliveries and other URLs by their path; other URLs are opaque)."""
    data: dict[str, bytes] = {}
    names: dict[str, str] = {}
    sha: dict[str, str] = {}
    ours = urlsplit(s.url).netloc
    delivered = urlsplit(s.delivery_url).netloc
    for name in S.uri_fields(model.openapi):
        value = inp.get(name)
        if not isinstance(value, str):
            continue
        parts = urlsplit(value)
        names[name] = parts.path.rsplit("/", 1)[-1]
        try:
            if value.startswith("data:"):
                content = _decode_data_uri(value)
                mime = value[5:].partition(",")[0].partition(";")[0]
                names[name] = "file" + (mimetypes.guess_extension(mime) or "")
            elif parts.netloc == ours and (m := re.fullmatch(r"/v1/files/([^/]+)", parts.path)):
                rec = s._live_file(m.group(1))
                if rec is None:
                    raise LookupError(f"404 Client Error: Not Found for url: {value}")
                content, names[name] = rec.content, rec.name
            elif parts.netloc == delivered and (m := re.fullmatch(r"/delivery/([^/]+)/([^/]+)", parts.path)):
                pred = s._predictions.get(m.group(1))
                if pred is None or not pred.file_available(m.group(2), time.time()):
                    raise LookupError(f"404 Client Error: Not Found for url: {value}")
                content = pred.files[m.group(2)].content()
            else:
                data[name] = value.encode()  # opaque URL: the model "sees" the URL text
                continue
        except (ValueError, binascii.Error, LookupError) as exc:
            return M.Inputs(data, names), sha, f"Failed to load input {name}: {exc}"
        data[name], sha[name] = content, hashlib.sha256(content).hexdigest()
    return M.Inputs(data, names), sha, None


def _create(s: "StandIn", req: Request, model: M.FakeModel, body: JSON) -> Response:
    inp = body.get("input", {})
    invalid = S.validate_input(model.openapi, inp)
    if invalid:
        return problem(422, S.validation_detail(invalid), "Input validation failed", invalid_fields=invalid)
    effective = S.with_defaults(model.openapi, inp)
    files, sha, load_error = _resolve_files(s, model, effective)
    rule = s._faults.outcome_for(model.full_name, effective)
    queue_delay, run_time, ttl = s._timing_for(model.full_name)
    pred_id = new_prediction_id()
    plan = model.run(effective, files, lambda n: f"{s.delivery_url}/delivery/{pred_id}/{n}", s._faults.random(),
                     rule.num_outputs if rule else None)
    if plan.seed is not None:
        effective["seed"] = plan.seed
    run_time *= plan.work
    billed = s._billed_time(model.full_name)
    billed = None if billed is None else billed * plan.work
    outcome, error, output = "succeeded", None, plan.output
    if plan.error is not None:
        outcome, error = "failed", plan.error
    if rule is not None:
        outcome, error = rule.outcome, rule.error if rule.outcome == "failed" else None
        queue_delay = rule.queue_delay if rule.queue_delay is not None else queue_delay
        run_time = rule.run_time if rule.run_time is not None else run_time
        output = None if rule.output_null else output
    if load_error is not None:
        outcome, error = "failed", load_error
    extras = {k: body[k] for k in ("webhook", "webhook_completed", "webhook_events_filter", "stream") if k in body}
    with s._cond:
        s._create_count += 1
        rec = PredictionRecord(
            id=pred_id, model=model.full_name, version=model.version, input=inp, effective_input=effective,
            input_sha256=sha, created=round(time.time() * 1e6) / 1e6,  # whole microseconds, as rendered
            queue_delay=queue_delay, run_time=run_time, output_ttl=ttl, billed_time=billed,
            outcome=outcome, error=error, output=output, files=plan.files, log_header=plan.log_header,
            steps=plan.steps, seed=plan.seed, create_number=s._create_count, base=s.url, extras=extras,
            rule=repr(rule.to_json()) if rule else None, missing_version=bool(rule and rule.missing_version),
            processing_on_timeout=bool(rule and rule.processing_on_timeout),
            partial_output=bool(rule and rule.partial_output))
        s._predictions[pred_id] = rec
        s._all_predictions.append(rec)
    prefer = _PREFER.fullmatch(req.headers.get("prefer", ""))
    if prefer is None:
        return Response.json(201, rec.render(rec.created))
    return _wait(s, rec, prefer)


def _wait(s: "StandIn", rec: PredictionRecord, prefer: re.Match[str]) -> Response:
    """Hold a ``Prefer: wait[=n]`` create until the prediction is terminal or ``n`` seconds pass."""
    seconds = min(max(int(prefer.group(1)), 1), 60) if prefer.group(1) else 60
    headers = {"Preference-Applied": f"wait={seconds}" if prefer.group(1) else "wait"}
    deadline = rec.created + seconds
    with s._cond:
        while not s._stopping:
            now = time.time()
            if rec.is_terminal(now) or now >= deadline:
                break
            s._cond.wait(min(deadline, rec.terminal_time()) - now + 0.001)
    now = time.time()
    status = rec.status_at(now)
    if status == "succeeded" and (s.options.sync_status == "processing" or s.options.sync_data_uris):
        output = _data_uris(rec) if s.options.sync_data_uris and not rec.expired(now) else ...
        body = rec.render(now, status="processing" if s.options.sync_status == "processing" else None, output=output)
    elif rec.is_terminal(now):
        body = rec.render(now)
    else:
        headers["Location"] = f"{s.url}/v1/predictions/{rec.id}"
        if rec.processing_on_timeout or s.options.wait_timeout_status == "processing":
            partial = rec.output[:1] if rec.partial_output and isinstance(rec.output, list) else None
            body = rec.render(now, status="processing", output=partial)
        else:
            body = rec.render(now, status="starting")
    return Response.json(201, body, headers)


def _data_uris(rec: PredictionRecord) -> Any:
    """The prediction's output with each delivered file inlined as a ``data:`` URI."""
    def inline(value: Any) -> Any:
        if isinstance(value, list):
            return [inline(v) for v in value]
        name = value.rsplit("/", 1)[-1] if isinstance(value, str) else None
        if name in rec.files:
            out = rec.files[name]
            return f"data:{out.content_type};base64,{base64.b64encode(out.content()).decode()}"
        return value
    return inline(rec.output)


def get_prediction(s: "StandIn", req: Request, pred_id: str) -> Response:
    """``GET /v1/predictions/{id}``."""
    rec = s._predictions.get(pred_id)
    return Response.json(200, rec.render()) if rec is not None else Response.json(404, NOT_FOUND)


def cancel(s: "StandIn", req: Request, pred_id: str) -> Response:
    """``POST /v1/predictions/{id}/cancel``: cancels a running prediction; a terminal one is returned as is."""
    with s._cond:
        rec = s._predictions.get(pred_id)
        if rec is None:
            return Response.json(404, NOT_FOUND)
        now = time.time()
        if not rec.is_terminal(now):
            rec.canceled_at = now
            s._cond.notify_all()
    return Response.json(200, rec.render(now))


def list_predictions(s: "StandIn", req: Request) -> Response:
    """``GET /v1/predictions``: newest first, ``created_after`` filter, ``cursor`` pagination."""
    params = {k: v[-1] for k, v in parse_qs(req.query).items()}
    with s._cond:
        recs = [r for r in s._all_predictions if not r.forgotten]
    try:
        if "created_after" in params:
            after = parse_rfc3339(params["created_after"])
            recs = [r for r in recs if r.created > after]
        if "created_before" in params:
            before_t = parse_rfc3339(params["created_before"])
            recs = [r for r in recs if r.created < before_t]
        before = int(base64.urlsafe_b64decode(params["cursor"] + "==").decode()) if "cursor" in params else None
    except ValueError:
        return problem(400, "Invalid query parameter")
    if before is not None:
        recs = [r for r in recs if r.create_number < before]
    recs.sort(key=lambda r: r.create_number, reverse=True)
    page, more = recs[: s.options.page_size], len(recs) > s.options.page_size
    nxt = None
    if more:
        query = {k: v for k, v in params.items() if k != "cursor"}
        query["cursor"] = base64.urlsafe_b64encode(str(page[-1].create_number).encode()).decode().rstrip("=")
        nxt = f"{s.url}/v1/predictions?{urlencode(query)}"
    now = time.time()
    results = [r.render(now) for r in page]
    if not s.options.list_data_inputs:  # data: inputs are not echoed in the list
        for body in results:
            body["input"] = {k: v for k, v in body["input"].items()
                             if not (isinstance(v, str) and v.startswith("data:"))}
    return Response.json(200, {"next": nxt, "previous": None, "results": results})


# -- models -----------------------------------------------------------------------------------------------------
def get_model(s: "StandIn", req: Request, owner: str, name: str) -> Response:
    """``GET /v1/models/{owner}/{name}``."""
    model = M.BY_NAME.get(f"{owner}/{name}")
    return Response.json(200, model.model_json()) if model else Response.json(404, NOT_FOUND)


def list_versions(s: "StandIn", req: Request, owner: str, name: str) -> Response:
    """``GET /v1/models/{owner}/{name}/versions``."""
    model = M.BY_NAME.get(f"{owner}/{name}")
    if model is None:
        return Response.json(404, NOT_FOUND)
    return Response.json(200, {"next": None, "previous": None, "results": [model.version_json()]})


def get_version(s: "StandIn", req: Request, owner: str, name: str, vid: str) -> Response:
    """``GET /v1/models/{owner}/{name}/versions/{id}``."""
    model = M.BY_NAME.get(f"{owner}/{name}")
    if model is None or model.version != vid:
        return Response.json(404, NOT_FOUND)
    return Response.json(200, model.version_json())

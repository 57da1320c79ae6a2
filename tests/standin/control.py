"""``/__control/*``: the in-process control API over HTTP (JSON in, JSON out, no auth), for other processes.

POST endpoints take a JSON object whose keys are the keyword arguments of the ``StandIn`` method of the same name:

* ``/__control/inject``            -> :meth:`StandIn.inject` (``route`` and ``kind`` required); returns ``{"rule": id}``
* ``/__control/fail_predictions``  -> :meth:`StandIn.fail_predictions`; returns ``{"rule": id}``
* ``/__control/override``          -> :meth:`StandIn.override` (no ``match`` callable); returns ``{"rule": id}``
* ``/__control/remove_rule``       ``{"rule": id}``;  ``/__control/clear_faults`` ``{}``
* ``/__control/set_latency``       ``{"model", "queue_delay", "run_time", "output_ttl"?}``
* ``/__control/set_predict_time``  ``{"model", "seconds"}`` (``null``: the time each one ran)
* ``/__control/set_token``         ``{"token"}``
* ``/__control/set_rate_limit``    -> :meth:`StandIn.set_rate_limit`
* ``/__control/configure``         -> :meth:`StandIn.configure` (``sync_status``, ``output_ttl``, ...)
* ``/__control/expire_outputs``    ``{}``;  ``/__control/forget`` ``{"id"}``

GET (or POST) queries: ``/__control/predictions?model=&status=``, ``/__control/count_creates?model=``,
``/__control/requests?method=&path_prefix=``, ``/__control/rules``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs

from .wire import Request, Response, problem

if TYPE_CHECKING:
    from .server import StandIn

JSON = dict[str, Any]


def _args(req: Request) -> JSON:
    args: JSON = {k: v[-1] for k, v in parse_qs(req.query).items()}
    if req.body:
        body = json.loads(req.body)
        if not isinstance(body, dict):
            raise ValueError("control body must be a JSON object")
        args.update(body)
    return args


def _rule(fn: Callable[..., Any]) -> Callable[["StandIn", JSON], JSON]:
    return lambda s, a: {"rule": fn(s, **a).id}


def _ok(fn: Callable[..., Any]) -> Callable[["StandIn", JSON], JSON]:
    def run(s: "StandIn", a: JSON) -> JSON:
        fn(s, **a)
        return {"ok": True}
    return run


def _predictions(s: "StandIn", a: JSON) -> JSON:
    return {"predictions": [p.to_json() for p in s.predictions(model=a.get("model"), status=a.get("status"))]}


def _requests(s: "StandIn", a: JSON) -> JSON:
    found = s.requests_matching(a.get("method"), a.get("path_prefix", ""))
    return {"requests": [r.to_json() for r in found]}


_ACTIONS: dict[str, Callable[["StandIn", JSON], JSON]] = {
    "inject": _rule(lambda s, **a: s.inject(**a)),
    "fail_predictions": _rule(lambda s, **a: s.fail_predictions(**a)),
    "override": _rule(lambda s, **a: s.override(**a)),
    "remove_rule": _ok(lambda s, rule: s.remove_rule(int(rule))),
    "clear_faults": _ok(lambda s: s.clear_faults()),
    "set_latency": _ok(lambda s, **a: s.set_latency(**a)),
    "set_predict_time": _ok(lambda s, model, seconds: s.set_predict_time(model, seconds)),
    "set_token": _ok(lambda s, token: s.set_token(token)),
    "set_rate_limit": _ok(lambda s, **a: s.set_rate_limit(**a)),
    "configure": _ok(lambda s, **a: s.configure(**a)),
    "expire_outputs": lambda s, a: {"expired": s.expire_outputs()},
    "forget": _ok(lambda s, id: s.forget(id)),  # `id`: the control API's argument name
    "predictions": _predictions,
    "count_creates": lambda s, a: {"count": s.count_creates(a.get("model"))},
    "requests": _requests,
    "rules": lambda s, a: {"faults": [r.to_json() for r in s._faults.faults],
                           "outcomes": [r.to_json() for r in s._faults.outcomes]},
}


def handle(s: "StandIn", req: Request) -> Response:
    """Run one control action; 400 on bad arguments, 404 on an unknown action."""
    action = _ACTIONS.get(req.path[len("/__control/"):].strip("/"))
    if action is None:
        return problem(404, f"unknown control action {req.path!r}; known: {sorted(_ACTIONS)}")
    try:
        result = action(s, _args(req))
    except (TypeError, ValueError, KeyError) as exc:
        return problem(400, f"{type(exc).__name__}: {exc}")
    return Response.json(200, result)

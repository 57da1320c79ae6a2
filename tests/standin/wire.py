"""Request/response value types and the real API's standard error bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]
UNAUTHENTICATED = {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token",
                   "status": 401}
NOT_FOUND = {"detail": "The requested resource could not be found.", "status": 404}
INVALID_VERSION = {"title": "Invalid version or not permitted", "detail": "The specified version does not exist "
                   "(or perhaps you don't have permission to use it?)", "status": 422}


@dataclass
class Request:
    """A parsed HTTP request."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    """An HTTP response to send (always with Content-Length)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> "Response":
        """A JSON response; 4xx/5xx use ``application/problem+json``."""
        ctype = "application/problem+json" if status >= 400 else "application/json"
        return cls(status, json.dumps(obj).encode(), {"Content-Type": ctype, **(headers or {})})


def problem(status: int, detail: str, title: str | None = None, **extra: Any) -> Response:
    """An error response in the real API's shape."""
    body: JSON = {"detail": detail, "status": status}
    if title:
        body["title"] = title
    body.update(extra)
    return Response.json(status, body)

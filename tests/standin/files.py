"""Files API (``/v1/files``) and output delivery (``/delivery/{prediction_id}/{name}``) of the stand-in."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import TYPE_CHECKING

from .store import FileRecord, new_file_id

from .wire import NOT_FOUND, Request, Response, problem

if TYPE_CHECKING:
    from .server import StandIn


# -- files ------------------------------------------------------------------------------------------------------
def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[dict[str, str], bytes]]:
    """Parse ``multipart/form-data`` into ``{name: (part params incl. filename/content-type, bytes)}``."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or m is None:
        raise ValueError("expected multipart/form-data")
    delimiter = b"--" + m.group(1).encode()
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed part")
        data = data[:-2] if data.endswith(b"\r\n") else data
        info: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                info.update({k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', value)})
            elif key.strip().lower() == "content-type":
                info["content-type"] = value.strip()
        if "name" in info:
            parts[info["name"]] = (info, data)
    return parts


def create_file(s: "StandIn", req: Request) -> Response:
    """``POST /v1/files``."""
    try:
        parts = parse_multipart(req.headers.get("content-type", ""), req.body)
    except ValueError as exc:
        return problem(400, str(exc))
    if "content" not in parts:
        return problem(400, "content is required")
    info, content = parts["content"]
    limit = s.options.max_file_size
    if len(content) > limit:
        text = "100MB" if limit == 100 * 1024 * 1024 else f"{limit} bytes"
        return problem(413, f"Files must be less than {text} in size")
    try:
        metadata = json.loads(parts["metadata"][1]) if "metadata" in parts else {}
    except ValueError:
        return problem(400, "metadata must be a JSON object")
    now = time.time()
    rec = FileRecord(id=new_file_id(), name=info.get("filename", "file"),
                     content_type=info.get("content-type", "application/octet-stream"), content=content,
                     metadata=metadata if isinstance(metadata, dict) else {}, created=now,
                     expires=now + s.options.file_ttl,
                     checksums={"sha256": hashlib.sha256(content).hexdigest(),
                                "md5": hashlib.md5(content).hexdigest()})  # md5: the etag, as the real API
    with s._cond:
        s._files[rec.id] = rec
    return Response.json(201, rec.to_json(s.url))


def list_files(s: "StandIn", req: Request) -> Response:
    """``GET /v1/files`` (newest first, one page)."""
    with s._cond:
        recs = [r for r in s._files.values() if r.expires > time.time()]
    recs.sort(key=lambda r: r.created, reverse=True)
    return Response.json(200, {"next": None, "previous": None, "results": [r.to_json(s.url) for r in recs]})


def get_file(s: "StandIn", req: Request, file_id: str) -> Response:
    """``GET /v1/files/{id}``."""
    rec = s._live_file(file_id)
    return Response.json(200, rec.to_json(s.url)) if rec else Response.json(404, NOT_FOUND)


def delete_file(s: "StandIn", req: Request, file_id: str) -> Response:
    """``DELETE /v1/files/{id}`` -> 204."""
    with s._cond:
        rec = s._files.pop(file_id, None)
    return Response(204) if rec is not None else Response.json(404, NOT_FOUND)


# -- delivery ---------------------------------------------------------------------------------------------------
def delivery(s: "StandIn", req: Request) -> Response:
    """``GET /delivery/{prediction_id}/{name}``: output bytes while the outputs live, else 404."""
    m = re.fullmatch(r"/delivery/([^/]+)/([^/]+)", req.path)
    if req.method not in ("GET", "HEAD") or m is None:
        return Response.json(404, NOT_FOUND)
    rec = s._predictions.get(m.group(1))
    if rec is None or not rec.file_available(m.group(2), time.time()):
        return Response.json(404, NOT_FOUND)
    out = rec.files[m.group(2)]
    return Response(200, out.content(), {"Content-Type": out.content_type, "Cache-Control": "max-age=3600"})

"""Every URL the web page answers, as one table of patterns over the raw request path.

Paths are matched before any percent-decoding and their variable parts are only job ids (`[A-Za-z0-9_-]`) and
frame numbers (up to 9 digits), so `..`, `%2e%2e`, `%2f` and the like never match anything: they are 404s.
Files are then looked up through the store and served only from inside the job's folder or the outbox
(`files.contained`).

    GET  /                                      overview page           GET /api/status       its JSON
    GET  /jobs/<id>                             job page                GET /api/jobs/<id>    its JSON (?since=)
    GET  /jobs/<id>/frames/<n>/source[/thumb]   a source frame (or its thumbnail)
    GET  /jobs/<id>/frames/<n>/painted[/thumb]  a painted frame (or its thumbnail)
    GET  /jobs/<id>/video, /jobs/<id>/subtitles.vtt                     the output and its prompt subtitles
    GET  /static/<file>, /metrics
    POST /api/jobs/<id>/retry, /api/jobs/<id>/cancel                    only with [web] actions = true

A POST must come from the page itself: it needs the `X-Shd-Action` header (a cross-site form cannot send one,
and a cross-site script would need a CORS preflight that is never granted) and, when the browser says where it
comes from (`Origin`, `Sec-Fetch-Site`), that must be this very site. When the page listens on loopback, the
`Host` header must name a loopback address or localhost, so a DNS-rebound name cannot read the page either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry

from shd import logs, metrics
from shd.config import Config, is_loopback
from shd.errors import MediaError, ShdError, StoreError
from shd.live import DaemonView
from shd.store import Job, Store
from shd.web import api, files

ACTION_HEADER = "x-shd-action"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
}
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".webp": "image/webp", ".mp4": "video/mp4", ".vtt": "text/vtt; charset=utf-8"}
STATIC = ("index.html", "job.html", "shd.css", "overview.js", "job.js", "common.js")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # a file to send (the server handles Range and HEAD)


def text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


def as_json(doc: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(doc).encode(), "application/json",
                    {"Cache-Control": "no-store"})


def _static(name: str) -> Response:
    data = (resources.files("shd.web") / "static" / name).read_bytes()
    return Response(200, data, TYPES[Path(name).suffix], {"Cache-Control": "no-cache"})


_ID = r"(?P<job>[A-Za-z0-9_-]{1,64})"
_N = r"(?P<n>[0-9]{1,9})"
Handler = Callable[["Site", dict[str, str], dict[str, list[str]], Mapping[str, str]], Response]
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/"), "overview_page"),
    ("GET", re.compile(r"/static/(?P<name>[a-z]+\.(?:html|css|js))"), "static"),
    ("GET", re.compile(r"/metrics"), "metrics"),
    ("GET", re.compile(r"/api/status"), "status"),
    ("GET", re.compile(rf"/api/jobs/{_ID}"), "job_json"),
    ("GET", re.compile(rf"/jobs/{_ID}"), "job_page"),
    ("GET", re.compile(rf"/jobs/{_ID}/frames/{_N}/(?P<kind>source|painted)(?P<thumb>/thumb)?"), "frame"),
    ("GET", re.compile(rf"/jobs/{_ID}/video"), "video"),
    ("GET", re.compile(rf"/jobs/{_ID}/subtitles\.vtt"), "subtitles"),
    ("POST", re.compile(rf"/api/jobs/{_ID}/(?P<action>retry|cancel)"), "action"),
]


class Site:
    """The web page's handlers over a read-only store and the daemon's view. `handle()` never raises."""

    def __init__(self, cfg: Config, store: Store, view: DaemonView, ffmpeg: str, *, loopback_only: bool):
        self.cfg = cfg
        self.store = store
        self.view = view
        self.ffmpeg = ffmpeg
        self.loopback_only = loopback_only
        self.registry: CollectorRegistry = metrics.registry(store, view)
        self.log = logs.get()

    @property
    def actions(self) -> bool:
        return self.cfg.web.actions

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """Answer one request. `target` is the raw request target (path and query, not decoded); `headers` has
        lower-case names."""
        if self.loopback_only and not _loopback_host(headers.get("host")):
            return text(421, "this page answers to localhost and loopback addresses only")
        path, _, query = target.partition("?")
        allowed = []
        for verb, pattern, name in ROUTES:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if verb != ("GET" if method == "HEAD" else method):
                allowed.append(verb)
                continue
            try:
                handler: Handler = getattr(Site, name)
                return handler(self, m.groupdict(), parse_qs(query), headers)
            except StoreError as e:
                self.log.warning("web_store_busy", path=path, error=str(e))
                return text(503, f"the store cannot be read right now: {e}")
            except Exception as e:  # one bad request must not take the page down (logged with its traceback)
                self.log.exception("web_request_failed", path=path, error=f"{type(e).__name__}: {e}")
                return text(500, "internal error (logged)")
        if allowed:
            return Response(405, b"method not allowed\n", headers={"Allow": ", ".join(sorted(set(allowed)))})
        return text(404, "not found")

    # --- pages and their JSON --------------------------------------------------------------------------------------
    def overview_page(self, _: dict[str, str], __: dict[str, list[str]], ___: Mapping[str, str]) -> Response:
        return _static("index.html")

    def static(self, m: dict[str, str], _: dict[str, list[str]], __: Mapping[str, str]) -> Response:
        return _static(m["name"]) if m["name"] in STATIC else text(404, "not found")

    def metrics(self, _: dict[str, str], __: dict[str, list[str]], ___: Mapping[str, str]) -> Response:
        return Response(200, metrics.render(self.registry), metrics.CONTENT_TYPE, {"Cache-Control": "no-store"})

    def status(self, _: dict[str, str], __: dict[str, list[str]], ___: Mapping[str, str]) -> Response:
        return as_json(api.overview(self.store, self.view, actions=self.actions))

    def job_page(self, m: dict[str, str], _: dict[str, list[str]], __: Mapping[str, str]) -> Response:
        return _static("job.html") if self._job(m) else text(404, "no such job")

    def job_json(self, m: dict[str, str], q: dict[str, list[str]], _: Mapping[str, str]) -> Response:
        job = self._job(m)
        if job is None:
            return text(404, "no such job")
        since = None
        if q.get("since"):
            try:
                since = float(q["since"][-1])
            except ValueError:
                return text(400, "since must be a number (the cursor of an earlier answer)")
        return as_json(api.job_doc(self.store, job, since=since, video=self._output(job) is not None,
                                   subtitles=self._subtitles(job) is not None, actions=self.actions))

    # --- files -----------------------------------------------------------------------------------------------------
    def frame(self, m: dict[str, str], _: dict[str, list[str]], __: Mapping[str, str]) -> Response:
        job = self._job(m)
        if job is None:
            return text(404, "no such job")
        try:
            f = self.store.frame(job.id, int(m["n"]))
        except StoreError:
            return text(404, "no such frame")
        job_dir = self._job_dir(job)
        picture = files.contained(f.path if m["kind"] == "source" else f.image_path, [job_dir])
        if picture is None:
            return text(404, f"no {m['kind']} picture for frame {f.idx}")
        if m["thumb"]:
            try:
                thumb = files.thumbnail(self.ffmpeg, picture, job_dir, f"{f.idx:06d}.{m['kind']}")
            except MediaError as e:
                self.log.warning("thumbnail_failed", job=job.id, frame=f.idx, error=str(e))
                return text(500, "cannot make a thumbnail of that picture")
            picture = files.contained(thumb, [job_dir])
            if picture is None:
                return text(404, "no thumbnail")
        return self._file(picture)

    def video(self, m: dict[str, str], _: dict[str, list[str]], __: Mapping[str, str]) -> Response:
        job = self._job(m)
        out = self._output(job) if job else None
        return self._file(out) if out else text(404, "no finished video")

    def subtitles(self, m: dict[str, str], _: dict[str, list[str]], __: Mapping[str, str]) -> Response:
        job = self._job(m)
        vtt = self._subtitles(job) if job else None
        return self._file(vtt) if vtt else text(404, "no subtitles")

    # --- actions ---------------------------------------------------------------------------------------------------
    def action(self, m: dict[str, str], _: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        if not self.actions:
            return text(403, "actions are off ([web] actions = false)")
        refused = _cross_site(headers)
        if refused:
            self.log.warning("web_action_refused", action=m["action"], job=m["job"], reason=refused)
            return text(403, refused)
        job = self._job(m)
        if job is None:
            return text(404, "no such job")
        try:
            message = self.view.retry(job.id) if m["action"] == "retry" else self.view.cancel(job.id)
        except ShdError as e:
            return as_json({"ok": False, "message": str(e)}, 409)
        self.log.info("web_action", action=m["action"], job=job.id, result=message)
        return as_json({"ok": True, "message": message})

    # --- helpers ---------------------------------------------------------------------------------------------------
    def _job(self, m: dict[str, str]) -> Job | None:
        try:
            return self.store.job(m["job"])
        except StoreError:
            return None

    def _job_dir(self, job: Job) -> Path:
        return self.cfg.paths.jobs_dir / job.id  # from the config, not the row: a row cannot widen what is served

    def _output(self, job: Job, suffix: str | None = None) -> Path | None:
        """The finished video (or the file beside it with `suffix`), if it is inside the outbox or the job folder."""
        if job.state != "done" or not job.output:
            return None
        path = Path(job.output) if suffix is None else Path(job.output).with_suffix(suffix)
        return files.contained(path, [self.cfg.paths.outbox, self._job_dir(job)])

    def _subtitles(self, job: Job) -> Path | None:
        """The prompt subtitles the outputs issue writes beside the video as <stem>.vtt, when they exist."""
        return self._output(job, ".vtt")

    @staticmethod
    def _file(path: Path) -> Response:
        return Response(200, content_type=TYPES.get(path.suffix.lower(), "application/octet-stream"),
                        headers={"Cache-Control": "no-cache"}, file=path)


def _loopback_host(host: str | None) -> bool:
    """Whether a Host header names localhost or a loopback IP address (not a name that merely resolves to one)."""
    if not host:
        return True  # not a browser (every browser sends Host)
    try:
        name = urlsplit(f"//{host}").hostname
        return bool(name) and is_loopback(str(name))
    except ValueError:
        return False


def _cross_site(headers: Mapping[str, str]) -> str | None:
    """Why a POST is refused as possibly cross-site, or None."""
    if headers.get(ACTION_HEADER) != "1":
        return "a POST needs the X-Shd-Action: 1 header (the page sends it)"
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"refused a {site} request"
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != headers.get("host"):
        return f"refused a request from {origin}"
    return None

"""The web page's HTTP server: the standard library's threading server on `[web] listen`, in daemon threads.

It reads the store through a read-only connection of its own (WAL readers never block the daemon's writes) and
the running daemon through a `DaemonView`. Files go out in chunks with `Range` support (a browser seeks in the
video that way); a request never takes the daemon down, and every socket has a timeout.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shd import logs
from shd.config import Config, is_loopback, parse_listen
from shd.errors import ShdError
from shd.live import DaemonView
from shd.store import Store
from shd.web.files import parse_range
from shd.web.routes import SECURITY_HEADERS, Response, Site

CHUNK = 64 * 1024
MAX_BODY = 64 * 1024  # a POST carries no body worth reading


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: Site

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line in the log instead of socketserver's traceback on stderr."""
        err = sys.exc_info()[1]
        logs.get().warning("web_connection_failed", client=str(client_address[0]),
                           error=f"{type(err).__name__}: {err}")


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "shd"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may stay silent before its connection is closed

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True
            self._send(Response(413, b"a POST here carries no body\n"), "POST")
            return
        self.rfile.read(int(length))
        self._serve("POST")

    def _serve(self, method: str) -> None:
        resp = self.server.site.handle(method, self.path, {k.lower(): v for k, v in self.headers.items()})
        self._send(resp, method)

    def _send(self, resp: Response, method: str) -> None:
        status, body, first, last = resp.status, resp.body, 0, -1
        headers = {**SECURITY_HEADERS, "Content-Type": resp.content_type, **resp.headers}
        if resp.file is not None:
            try:
                st = resp.file.stat()
            except OSError:
                self._send(Response(404, b"not found\n"), method)
                return
            size = st.st_size
            etag = f'"{st.st_mtime_ns:x}-{size:x}"'
            headers.update({"ETag": etag, "Accept-Ranges": "bytes"})
            if self.headers.get("If-None-Match") == etag:
                status, size = 304, 0
            else:
                wanted = parse_range(self.headers.get("Range"), size)
                if wanted is False:
                    self._send(Response(416, headers={"Content-Range": f"bytes */{size}"}), method)
                    return
                if isinstance(wanted, tuple):
                    status, (first, last) = 206, wanted
                    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
                else:
                    last = size - 1
            headers["Content-Length"] = str(last - first + 1 if status != 304 else 0)
        else:
            headers["Content-Length"] = str(len(body))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method == "HEAD" or status == 304:
            return
        if resp.file is None:
            self.wfile.write(body)
            return
        with resp.file.open("rb") as fh:
            fh.seek(first)
            left = last - first + 1
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are not logged one by one; failures are, by the site

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away or went silent: nothing to answer


class WebServer:
    """The page on one address. `start()` binds (ShdError if it cannot) and serves in a thread; `stop()`."""

    def __init__(self, cfg: Config, view: DaemonView, ffmpeg: str):
        addr = parse_listen(cfg.web.listen)
        assert addr is not None, "the web page is off"
        self.host, self.port = addr
        self.cfg = cfg
        self.view = view
        self.ffmpeg = ffmpeg
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self.url = ""

    def start(self) -> str:
        """Listen and serve; returns the page's URL (with the port actually bound, for port 0)."""
        self._store = Store.open_readonly(self.cfg.paths.database)
        try:
            httpd = (_Server6 if ":" in self.host else _Server)((self.host, self.port), _Handler)
        except OSError as e:
            self._store.close()
            raise ShdError(f"web page: cannot listen on {self.cfg.web.listen}: {e.strerror or e}") from None
        httpd.site = Site(self.cfg, self._store, self.view, self.ffmpeg, loopback_only=is_loopback(self.host))
        self._httpd = httpd
        port = httpd.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="shd-web", daemon=True)
        self._thread.start()
        log = logs.get()
        if is_loopback(self.host):
            log.info("web_listening", url=self.url, actions=self.cfg.web.actions)
        else:
            log.warning("web_listening_beyond_loopback", url=self.url, actions=self.cfg.web.actions,
                        detail="[web] listen is not a loopback address: by your explicit choice, everyone who can "
                               "reach it can read the page")
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._store is not None:
            self._store.close()
            self._store = None


def start(cfg: Config, view: DaemonView, ffmpeg: str) -> WebServer | None:
    """Start the page `[web] listen` asks for; None when it is off (""). Raises ShdError if it cannot listen."""
    if parse_listen(cfg.web.listen) is None:
        return None
    server = WebServer(cfg, view, ffmpeg)
    server.start()
    return server

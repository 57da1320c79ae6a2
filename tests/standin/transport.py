"""HTTP/1.1 (keep-alive, Content-Length) over TLS on a ThreadingHTTPServer.

The TLS handshake happens in the per-connection thread (``finish_request``), never in the accept loop, so a client
that connects and stalls cannot block anyone else.  Injected faults (delays, dropped connections, truncated or
slow bodies) are applied here, around :func:`api.handle`.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import api, control
from .wire import Request, Response

if TYPE_CHECKING:
    from .server import StandIn


class StandInHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that wraps each accepted socket in TLS inside the connection's thread."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], standin: "StandIn", ssl_context: ssl.SSLContext | None,
                 handshake_timeout: float = 10.0, *, delivery_only: bool = False) -> None:
        self.standin = standin
        self.delivery_only = delivery_only  # a delivery host: only /delivery/ is served there
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        super().__init__(address, Handler)

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._live_lock:
            (self._live.add if add else self._live.discard)(sock)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Do the TLS handshake (with a timeout) in this thread, then serve the connection."""
        sock: socket.socket = request
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                request.settimeout(self.handshake_timeout)
                try:
                    sock = self.ssl_context.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError):
                    return
                sock.settimeout(None)
            self._track(sock, True)
            try:
                self.RequestHandlerClass(sock, client_address, self)
            except (OSError, ssl.SSLError):
                pass
            except Exception:  # noqa: BLE001 - keep serving other connections
                traceback.print_exc(file=sys.stderr)
        finally:
            self._track(sock, False)
            if sock is not request:
                try:
                    sock.close()
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about connections that clients drop."""

    def close_all_connections(self) -> None:
        """Shut down every live connection (used by ``StandIn.stop``)."""
        with self._live_lock:
            live = list(self._live)
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    """Reads one request at a time from a keep-alive connection and answers it through :mod:`api`."""

    protocol_version = "HTTP/1.1"
    server: StandInHTTPServer
    timeout = 300  # idle keep-alive connections are dropped after this many seconds
    server_version = "standin-replicate/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
        """No access log."""

    def do_GET(self) -> None:  # http.server's naming
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        """Close the connection without (completing) a response."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, resp: Response, mode: str | None = None, delay: float = 0.0, chunks: int = 8) -> None:
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        if resp.status != 204 and resp.status >= 200:
            self.send_header("Content-Length", str(len(resp.body)))
        self._headers_buffer.append(b"\r\n")  # end of headers, sent together with the body below
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        body = b"" if self.command == "HEAD" or resp.status == 204 else resp.body
        if mode == "truncate":
            self.wfile.write(head + body[: len(body) // 2])
            self._drop()
        elif mode == "slow_body":
            self.wfile.write(head)
            step = max(1, -(-len(body) // max(1, chunks)))
            pieces = [body[i:i + step] for i in range(0, len(body), step)] or [b""]
            for piece in pieces:
                time.sleep(delay / len(pieces))
                self.wfile.write(piece)
        else:
            self.wfile.write(head + body)

    def _dispatch(self) -> None:
        s = self.server.standin
        split = urlsplit(self.path)
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command.upper(), split.path, split.query, headers, body)
        if self.server.delivery_only != (req.path.startswith("/delivery/") and s.delivery_url != s.url):
            s._record_request(req).status = 404  # outputs are served by the delivery host alone, and only they
            self._send(Response.json(404, api.NOT_FOUND))
            return
        if req.path.startswith("/__control/"):
            self._send(control.handle(s, req))
            return
        record = s._record_request(req)
        rule = s._faults.fault_for(req.method, req.path)
        if rule is not None:
            record.fault = rule.kind
            if rule.delay and rule.kind != "slow_body":
                time.sleep(rule.delay)
            if rule.kind == "close_before":
                self._drop()
                return
        try:
            if rule is not None and rule.kind in ("status", "non_json"):
                resp = api.fault_response(rule)
            else:
                resp = api.handle(s, req)
        except Exception as exc:  # noqa: BLE001 - a bug or a raising predicate: answer 500, keep serving
            traceback.print_exc(file=sys.stderr)
            resp = api.problem(500, f"stand-in error: {exc!r}", "Internal Server Error")
        if rule is not None and rule.kind == "close_after":
            self._drop()
            return
        record.status = resp.status
        mode = rule.kind if rule is not None and rule.kind in ("truncate", "slow_body") else None
        self._send(resp, mode, rule.delay if rule else 0.0, rule.chunks if rule else 8)

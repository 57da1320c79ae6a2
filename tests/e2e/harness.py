"""Drive `shd run` as a real process: a real NOTIFY_SOCKET to hear READY/STATUS/WATCHDOG, real signals, and
waiting on events (notify messages, files, database rows) with deadlines instead of sleeping."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.videos import ffmpeg_exe

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = 60.0, every: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Daemon:
    """One `shd run` process with its own notify socket; logs collected from stderr."""

    def __init__(self, cfg: Path, env: dict[str, str], cwd: Path, *, watchdog_usec: int | None = None,
                 umask: int = -1):
        self.cfg, self.cwd, self.umask = cfg, cwd, umask
        self.sock_path = cwd / f"notify-{time.monotonic_ns()}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.sock.settimeout(0.2)
        self.env = dict(env, NOTIFY_SOCKET=str(self.sock_path))
        if watchdog_usec:
            self.env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.messages: list[str] = []
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Daemon:
        self.proc = subprocess.Popen([sys.executable, "-m", "shd", "run", "--config", str(self.cfg)], env=self.env,
                                     cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, umask=self.umask)
        threading.Thread(target=self._read_socket, daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True).start()
        return self

    def _read_socket(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if self.sock.fileno() < 0:
                    return
                continue
            except OSError:
                return
            with self._cv:
                self.messages.append(data.decode())
                self._cv.notify_all()

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def wait_message(self, fragment: str, timeout: float = 30.0, after: int = 0) -> str:
        """The first notify message (from index `after`) containing `fragment`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for m in self.messages[after:]:
                    if fragment in m:
                        return m
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited ({self.proc.returncode}) before {fragment!r}:\n"
                                         + "\n".join(self.lines[-30:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no notify message with {fragment!r}; got {self.messages}")
                self._cv.wait(min(left, 0.2))

    def wait_log(self, event: str, timeout: float = 30.0, after: int = 0) -> dict[str, Any]:
        """The first JSON log line (from index `after`) whose event is `event`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines[after:]:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("event") == event:
                        return dict(rec)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log event {event!r}; last lines:\n" + "\n".join(self.lines[-30:]))
                self._cv.wait(min(left, 0.2))

    def ready(self, timeout: float = 30.0) -> Daemon:
        self.wait_message("READY=1", timeout)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a power cut of the process."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.close()

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM and wait; returns (exit code, seconds it took)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        took = time.monotonic() - t0
        self.close()
        return rc, took

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sock.close()
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_process(src: Path, cfg: Path, env: dict[str, str], cwd: Path,
                  stdout: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    """`shd process SRC --config CFG` in the background, as a user starts it (nothing on stdin); its stderr (and,
    unless `stdout` says otherwise, its stdout) piped as text."""
    return subprocess.Popen([sys.executable, "-m", "shd", "process", str(src), "--config", str(cfg)], env=env,
                            cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, text=True)


def status_json(cfg: Path, env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    """`shd status --json`, parsed ([] before the database exists)."""
    r = subprocess.run([sys.executable, "-m", "shd", "status", "--json", "--config", str(cfg)], env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        if "no database yet" in r.stderr:
            return []
        raise AssertionError(r.stderr)
    return list(json.loads(r.stdout)["jobs"])


def ffmpegs_mentioning(text: str) -> list[int]:
    """Pids of the running ffmpeg processes (zombies excepted) whose command line contains `text`, e.g. a test's
    tmp_path: the ffmpeg runs of a daemon started there."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if b"ffmpeg" in Path(os.fsdecode(argv[0])).name.encode() and state != "Z" and any(
                text.encode() in arg for arg in argv):
            pids.append(int(entry.name))
    return pids


def kill_ffmpegs_mentioning(text: str) -> None:
    """SIGKILL what `ffmpegs_mentioning(text)` finds (test clean-up: nothing a test started outlives it)."""
    for pid in ffmpegs_mentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def slow_ffmpeg(folder: Path, readrate: float = 1.0) -> str:
    """An ffmpeg that reads its input at `readrate` x real time, so extraction and stitching take seconds."""
    script = folder / "slow-ffmpeg"
    script.write_text(f'#!/bin/sh\nexec "{ffmpeg_exe()}" -readrate {readrate} "$@"\n')
    script.chmod(0o755)
    return str(script)


def copy_slowly(src: Path, dest: Path, chunks: int, pause: float, between: Callable[[], None] | None = None) -> None:
    """Copy `src` to `dest` in `chunks` writes with `pause` seconds between them, as a slow network copy does;
    `between()` runs after every chunk but the last."""
    data = src.read_bytes()
    step = -(-len(data) // chunks)
    with dest.open("wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])
            fh.flush()
            if i + step < len(data):
                if between is not None:
                    between()
                time.sleep(pause)


class Plug:
    """A TCP forwarder in front of a loopback server, to unplug it: `pull()` closes the port (new connections are
    refused, open ones dropped: the API is unreachable), `push()` opens the same port again."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def push(self) -> Plug:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def pull(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._open.discard(src)
            src.close()  # the other direction's pump closes the other socket

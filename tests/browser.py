"""A real headless Chromium (Debian's `chromium` package), driven through the DevTools protocol over a websocket.

`find_chromium()` returns the browser, installing the Debian package first when it is missing and this process can
(root, apt-get present): that is what CI on a fresh Debian machine does. Where it cannot, it returns the reason, and
the browser tests skip with it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> tuple[str | None, str]:
    """(path to chromium, "") or (None, why it is not available here)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM, ""
    apt = shutil.which("apt-get")
    if apt is None:
        return None, f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium package"
    if os.geteuid() != 0:
        return None, f"{CHROMIUM} is missing and installing Debian's chromium package needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [apt, "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:  # a fresh machine may not have package lists yet
        subprocess.run([apt, "-o", "DPkg::Lock::Timeout=600", "update"], env=env, capture_output=True,
                       timeout=1200)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0 or not Path(CHROMIUM).exists():
        return None, f"apt-get install chromium failed: {done.stderr.strip()[-500:]}"
    return CHROMIUM, ""


def pixels(png: bytes, ffmpeg: str) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes row by row) of a PNG, decoded by ffmpeg."""
    width, height = struct.unpack(">II", png[16:24])
    done = subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "png_pipe", "-i", "-",
                           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], input=png, capture_output=True, timeout=60,
                          check=True)
    assert len(done.stdout) == width * height * 3
    return width, height, done.stdout


class Browser:
    """One headless Chromium with one page. `evaluate()` runs JavaScript in the page; `wait_js()` polls it."""

    def __init__(self, exe: str, width: int = 1280, height: int = 1600):
        import websocket  # websocket-client, a test extra

        self.profile = Path(tempfile.mkdtemp(prefix="shd-chromium-"))
        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
                                      f"--window-size={width},{height}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not start (exit {self.proc.poll()})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self._id = 0
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.enable")

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are skipped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_js("document.readyState === 'complete' && location.href === " + json.dumps(url), what=url)

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise AssertionError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_js(self, expression: str, what: str, timeout: float = 60.0) -> Any:
        """Poll `expression` until it is truthy (the page updates itself; nothing here reloads it). An expression
        that throws (e.g. while a link's navigation replaces the page) counts as not yet."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
            except AssertionError as e:
                last = f" (last error: {e})"
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}{last}")
            time.sleep(0.1)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

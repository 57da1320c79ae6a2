"""`shd process` in the foreground: on a terminal (a real pty), one live progress line instead of log lines; the log
on request (`--verbose`, `--log-file`); from a script, log lines as before."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.conftest import run_shd
from tests.standin import StandIn
from tests.videos import make_video

pytestmark = pytest.mark.slow


def process_on_a_terminal(args: list[str], env: dict[str, str], cwd: Path, columns: int = 100) -> tuple[int, str, str]:
    """Run `shd process ARGS` with stderr on a pty `columns` wide; (exit code, what the terminal got, stdout)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "shd", "process", *args], env=env, cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                raise AssertionError(f"no output for 60 s; so far: {seen!r}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed its end of the terminal (it exited)
                break
            if not data:
                break
            seen += data
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        return proc.wait(30), seen.decode(), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_video(tmp_path / "clip.mp4", seconds=3.0, size=(64, 48), audio=False)


def test_on_a_terminal_progress_is_one_live_line_not_log_lines(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, clip: Path) -> None:
    rc, terminal, out = process_on_a_terminal([str(clip), "--config", str(make_config())], shd_env, tmp_path)
    assert rc == 0 and out.strip() == str(tmp_path / "outbox" / "clip.mp4")
    assert "frame_generated" not in terminal and "prediction_created" not in terminal  # no per-frame logs
    redraws = [part.split("\x1b[K", 1)[-1] for part in terminal.split("\r") if "painted" in part]
    assert redraws, terminal
    assert all(len(line.rstrip("\r\n")) < 100 for line in redraws)  # never wider than the terminal
    assert "clip.mp4: 3/3 painted, 0 failed, done" in redraws[-1]
    lines = terminal.replace("\r\n", "\n").split("\n")
    assert lines[-1] == "" and "3/3 painted" in lines[-2]  # the last state stays on a line of its own


def test_verbose_shows_every_log_line_above_it_and_log_file_keeps_them(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, clip: Path) -> None:
    cfg = str(make_config())
    rc, terminal, _ = process_on_a_terminal([str(clip), "--config", cfg, "--verbose"], shd_env, tmp_path)
    assert rc == 0 and terminal.count("frame_generated") == 3 and "painted" in terminal
    log = tmp_path / "shd.log"
    rc, terminal, _ = process_on_a_terminal([str(clip), "--config", cfg, "--output",
                                             str(tmp_path / "again.mp4"), "--log-file", str(log)],
                                            shd_env, tmp_path)
    assert rc == 0 and "frame_generated" not in terminal and "3/3 painted" in terminal
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events.count("frame_generated") == 3 and "job_done" in events


def test_from_a_script_it_stays_line_oriented(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, clip: Path) -> None:
    r = run_shd("process", str(clip), "--config", str(make_config()), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0 and "\r" not in r.stderr and "painted" not in r.stderr
    events = [json.loads(line)["event"] for line in r.stderr.splitlines() if line.startswith("{")]
    assert events.count("frame_generated") == 3

"""Shared fixtures: a running stand-in Replicate server, config files, and the real `shd` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.standin import StandIn

REPO = Path(__file__).resolve().parents[1]

# Small frames and fast polls keep the suite quick; the web page on a free port (tests run side by side); everything
# else is the shipped default.
BASE_CONFIG = {
    "paths": {"inbox": "inbox", "outbox": "outbox", "state_dir": "state"},
    "watch": {"stable_seconds": 0.5, "poll_interval": 0.2, "rescan_interval": 2.0},
    "replicate": {"concurrency": 4, "poll_interval": 0.05, "backoff_base": 0.05, "backoff_max": 0.5,
                  "create_wait": 2},
    "replicate.image_input": {"width": 64, "height": 48, "num_inference_steps": 4},
    "web": {"listen": "127.0.0.1:0"},
}


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def write_config(path: Path, overrides: dict[str, dict[str, Any] | None] | None = None) -> Path:
    """Write BASE_CONFIG merged with `overrides` (section -> keys; None leaves the section out) as TOML at `path`."""
    sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BASE_CONFIG.items()}
    for section, values in (overrides or {}).items():
        if values is None:
            sections.pop(section, None)
        else:
            sections.setdefault(section, {}).update(values)
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    with StandIn(tmp_path / "standin") as server:
        yield server


@pytest.fixture
def shd_env(standin: StandIn) -> dict[str, str]:
    """Environment for a `shd` subprocess talking to the stand-in (no systemd, JSON logs)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "SHD_CONFIG", "CREDENTIALS_DIRECTORY")}
    env.update(standin.env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    def make(overrides: dict[str, dict[str, Any] | None] | None = None, name: str = "shd.toml") -> Path:
        return write_config(tmp_path / name, overrides)

    return make


def run_shd(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120,
            umask: int = -1) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "shd", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, umask=umask)


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """Mount a small tmpfs: `tmpfs(path, "2m")` (another filesystem, or a disk that fills). Needs root; the test
    is skipped, saying why, where mounting is impossible. Everything mounted is unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)

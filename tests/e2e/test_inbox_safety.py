"""The inbox is not a way to read other files, and what shd writes is not for everyone's eyes."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, status_json, wait_for
from tests.standin import StandIn
from tests.videos import ffmpeg_exe, make_video

pytestmark = pytest.mark.slow


def test_links_and_special_files_in_the_inbox_are_left_alone_with_one_log_line_each(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, tmpfs) -> None:
    """A symlink named like a video, pointing at a secret, with the state directory on another filesystem (where a
    claim would copy the target): never followed, never copied; it and a folder, a FIFO, a socket and a device
    each get one log line however often the inbox is rescanned, and a real video beside them is painted."""
    state = tmpfs(tmp_path / "state", "64m")
    secret = tmp_path / "private" / "secret.mp4"
    make_video(secret, seconds=1.0, size=(96, 72))  # a video, so that following the link would make a job of it
    secret_bytes = secret.read_bytes()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.mp4").symlink_to(secret)
    (inbox / "folder.mp4").mkdir()
    os.mkfifo(inbox / "pipe.mp4")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(inbox / "sock.mp4"))
    os.mknod(inbox / "null.mp4", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    cfg = make_config({"watch": {"rescan_interval": 0.3}, "log": {"level": "debug"}})
    try:
        with Daemon(cfg, shd_env, tmp_path) as d:
            d.ready()
            make_video(inbox / "real.mp4", seconds=1.0)
            wait_for("the real video done", lambda: [j for j in status_json(cfg, shd_env, tmp_path)
                                                     if j["state"] == "done"])
            mark = len(d.lines)
            d.wait_log("watcher.rescanned", after=mark)  # rescans went on meanwhile...
            d.wait_log("watcher.rescanned", after=len(d.lines))
            skipped = [rec for rec in map(_json, d.lines) if rec.get("event") == "inbox_entry_skipped"]
            reasons = {Path(rec["path"]).name: rec["reason"] for rec in skipped}
            assert len(skipped) == 5, skipped  # ...without repeating a line
            assert reasons == {"x.mp4": "symbolic link, not followed", "folder.mp4": "a folder (not watched)",
                               "pipe.mp4": "a FIFO, not a regular file", "sock.mp4": "a socket, not a regular file",
                               "null.mp4": "a device, not a regular file"}
            assert [j["source"] for j in status_json(cfg, shd_env, tmp_path)] == ["real.mp4"]
    finally:
        sock.close()
    assert (inbox / "x.mp4").is_symlink() and os.readlink(inbox / "x.mp4") == str(secret)
    assert secret.read_bytes() == secret_bytes
    for path in state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret_bytes not in path.read_bytes(), path


def _json(line: str) -> dict:
    try:
        return dict(json.loads(line))
    except ValueError:
        return {}


def test_files_are_private_whatever_the_umask_and_children_get_no_credentials(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Under umask 000: every folder and file shd creates in the state directory is 0700/0600 (the videos it
    claimed keep the mode their owner gave them, inside those folders), the published video is not readable by
    others, and ffmpeg runs without the token or any credential in its environment."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "replicate_token").write_text(standin.token)
    env = dict(shd_env, CREDENTIALS_DIRECTORY=str(creds), AWS_SECRET_ACCESS_KEY="do-not-leak")
    envs = tmp_path / "envs"
    envs.mkdir()
    spy = tmp_path / "spy-ffmpeg"
    spy.write_text(f'#!/bin/sh\nenv > "{envs}/$$"\nexec "{ffmpeg_exe()}" "$@"\n')
    spy.chmod(0o755)
    cfg = make_config({"ffmpeg": {"path": str(spy)}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=1.0)
    bad = tmp_path / "inbox" / "bad.mp4"
    bad.write_text("not a video\n")
    with Daemon(cfg, env, tmp_path, umask=0) as d:
        d.ready()

        def finished() -> list[dict]:
            jobs = status_json(cfg, env, tmp_path)
            return jobs if len(jobs) == 2 and all(j["state"] in ("done", "failed") for j in jobs) else []

        jobs = wait_for("both jobs finished", finished, timeout=60)
        wait_for("the bad file moved aside", (tmp_path / "state" / "failed" / "bad.mp4.error.txt").exists)
    out = Path(next(j["output"] for j in jobs if j["state"] == "done"))
    assert out.stat().st_mode & 0o007 == 0
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    claimed = {"clip.mp4", "bad.mp4"}
    for path in state.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert path.name in claimed or mode & 0o077 == 0, (path, oct(mode))
    dumps = list(envs.iterdir())
    assert dumps
    for dump in dumps:
        text = dump.read_text()
        assert standin.token not in text and "REPLICATE_API_TOKEN" not in text
        assert "CREDENTIALS_DIRECTORY" not in text and "do-not-leak" not in text

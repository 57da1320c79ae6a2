"""File names of any legal length and with odd characters go through the whole daemon: painted, moved aside with
their reason, shown in one status row each, retried."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_shd
from tests.e2e.harness import Daemon, status_json, wait_for
from tests.standin import StandIn
from tests.videos import make_video

pytestmark = pytest.mark.slow

GOOD = [
    "a" * 251 + ".mp4",               # 255 bytes, the longest legal name
    "é" * 125 + ".mov",               # 254 bytes of two-byte characters
    "n" * 255,                        # 255 bytes and no extension: the output's stem must be shortened
    "two\nlines.mp4",                 # a newline
    "-rf %d 'q' \"dq\" $HOME; a:b\t*.mp4",
]
BAD = "b" * 251 + ".avi"              # not a video, with the longest legal name


def settled(cfg: Path, env: dict[str, str], cwd: Path, n: int) -> list[dict]:
    jobs = status_json(cfg, env, cwd)
    return jobs if len(jobs) == n and all(j["state"] in ("done", "failed") for j in jobs) else []


def test_the_longest_names_and_odd_characters_go_all_the_way_through(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config({"pipeline": {"audio": "none"}})
    inbox = tmp_path / "inbox"
    staging = tmp_path / "staging"
    for name in GOOD:
        make_video(staging / name, seconds=1.0, size=(64, 48), audio=False)
    (staging / BAD).write_text("not a video\n" * 10)
    inbox.mkdir()
    failed = tmp_path / "state" / "failed"
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        for name in [*GOOD, BAD]:
            os.rename(staging / name, inbox / name)
        jobs = wait_for("every job finished", lambda: settled(cfg, shd_env, tmp_path, len(GOOD) + 1), timeout=90)
        by_source = {j["source"]: j for j in jobs}
        for name in GOOD:
            assert by_source[name]["state"] == "done", by_source[name]
        outputs = [Path(by_source[name]["output"]) for name in GOOD]
        assert len(set(outputs)) == len(GOOD)
        for out in outputs:
            assert out.is_file() and len(os.fsencode(out.name)) <= 255 and out.suffix == ".mp4"
        # the stem of the set leaves room for its longest name, `<stem>.prompts.csv`
        assert (tmp_path / "outbox" / ("a" * 243 + ".prompts.csv")).is_file()
        assert (tmp_path / "outbox" / ("a" * 243 + ".mp4")).is_file()
        bad = by_source[BAD]
        assert bad["state"] == "failed" and BAD in bad["error"]
        wait_for("the bad file moved aside", lambda: (failed / BAD).is_file())
        (note,) = [p for p in failed.iterdir() if p.name.endswith(".error.txt")]
        assert len(os.fsencode(note.name)) <= 255 and note.name.startswith("b" * 200)
        assert bad["error"] in note.read_text()

        table = run_shd("status", "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        rows = table.stdout.splitlines()
        # the daemon's line, a header, then one row per job, then the spend
        assert len(rows) == 2 + len(GOOD) + 1 + 1 and rows[-1].startswith("spend: "), table.stdout
        assert rows[0].startswith("daemon ") and all(any(j["id"] in row for row in rows[2:-1]) for j in jobs)
        detail = run_shd("status", by_source["two\nlines.mp4"]["id"], "--config", str(cfg), env=shd_env,
                         cwd=tmp_path)
        assert detail.returncode == 0 and "two\\nlines.mp4" in detail.stdout

        retried = run_shd("retry", bad["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert retried.returncode == 0, retried.stderr
        assert not note.exists()
        wait_for("the bad file moved aside again with its reason", note.exists)
        assert (failed / BAD).is_file() and d.alive


def test_an_output_name_that_leaves_no_room_for_its_sidecars_is_refused_before_anything_is_paid(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """`--output` with the longest legal name: its sidecars (`<stem>.prompts.csv`...) cannot have theirs. That is
    bad usage, said in one line with the room there is (it was an internal error, exit 1, from a look at the
    sidecars' names), before any job or paid call."""
    cfg = make_config({"pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    out = tmp_path / ("o" * 251 + ".mp4")
    r = run_shd("process", str(src), "--config", str(cfg), "--output", str(out), env=shd_env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "would pass the 255-byte name limit" in last and last.endswith("whose stem takes at most 243 bytes")
    assert standin.count_creates() == 0 and not (tmp_path / "state" / "shd.db").exists()
    ok = tmp_path / ("o" * 243 + ".mp4")  # the most there is room for
    r = run_shd("process", str(src), "--config", str(cfg), "--output", str(ok), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ok.is_file() and (tmp_path / ("o" * 243 + ".prompts.csv")).is_file()

"""`shd process` always ends, says why, and exits as the README's table says; and the same file run again resumes
its unfinished job instead of paying for it again, whatever stopped it (Ctrl-C, a crash at the worst moment,
refused credentials, an unreachable API, a locked database)."""

from __future__ import annotations

import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from shd.store import Store
from tests.conftest import run_shd
from tests.e2e.harness import Daemon, Plug, slow_ffmpeg, start_process, status_json, wait_for
from tests.standin import StandIn
from tests.videos import make_video, probe_duration

pytestmark = pytest.mark.slow
RESUMES = "`shd process` (the same file) or `shd run` resumes it"


def ledger(tmp_path: Path) -> list[str]:
    return sorted(p.status for p in Store.open_readonly(tmp_path / "state" / "shd.db").predictions())


def reason(err: str) -> str:
    """The line `shd process` ends with: why it stopped (logs may come before it)."""
    return [line for line in err.splitlines() if line.startswith("shd: ")][-1]


def one_job(tmp_path: Path) -> str:
    (job,) = Store.open_readonly(tmp_path / "state" / "shd.db").jobs()
    return job.id


def finish_again(tmp_path: Path, cfg: Path, src: Path, env: dict[str, str], job_id: str) -> None:
    """The same file again: its job resumes (the same id, said so) and finishes."""
    again = run_shd("process", str(src), "--config", str(cfg), env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"job {job_id}: clip.mp4 (the same file again" in again.stderr
    assert one_job(tmp_path) == job_id


def interrupted_while_painting(src: Path, cfg: Path, standin: StandIn, env: dict[str, str], cwd: Path,
                               signum: signal.Signals) -> str:
    """`shd process` stopped by `signum` while both of a two-second clip's pictures are being painted (the stand-in
    slow enough for that); it must end with exit 130. Returns what it said on stderr."""
    proc = start_process(src, cfg, env, cwd)
    try:
        wait_for("both pictures being painted", lambda: standin.count_creates("stability-ai/sdxl") == 2)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    return err


@pytest.mark.parametrize("point", ["ledger-written", "create-answered"])
def test_a_crash_between_the_ledger_row_and_the_remote_id_pays_nothing_twice(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, point: str) -> None:
    """SIGKILL exactly after the paid create is recorded (not sent yet), or exactly after it came back (its id not
    recorded yet): the next run finds what the server has, or creates it once, never twice."""
    cfg = make_config({"replicate": {"concurrency": 1}, "pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    killed = run_shd("process", str(src), "--config", str(cfg), env=dict(shd_env, SHD_TEST_KILL_AT=point),
                     cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    (row,) = Store.open_readonly(tmp_path / "state" / "shd.db").predictions()
    assert row.status == "creating" and row.remote_id is None
    assert standin.count_creates() == (0 if point == "ledger-written" else 1)
    finish_again(tmp_path, cfg, src, shd_env, row.job_id)
    assert standin.count_creates() == 4  # two frames, two stages: each paid once
    if point == "create-answered":  # found on the server by its input, and recorded with its id
        assert ledger(tmp_path) == ["succeeded"] * 4
    else:  # never sent: not on the server, recorded as such, then created
        assert ledger(tmp_path) == ["lost"] + ["succeeded"] * 4


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_ctrl_c_then_the_same_file_again_resumes_its_job_without_paying_again(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, signum: signal.Signals) -> None:
    """Ctrl-C, or the terminal closed (SIGHUP): stopped as cleanly (its ffmpeg with it), and resumed unpaid."""
    standin.set_latency("stability-ai/sdxl", 0.0, 4.0)  # at work when Ctrl-C comes; done while it resumes
    cfg = make_config({"pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    err = interrupted_while_painting(src, cfg, standin, shd_env, tmp_path, signum)
    assert reason(err) == f"shd: interrupted; job {one_job(tmp_path)} is recorded: {RESUMES}"
    status = run_shd("status", "--json", "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert '"interrupted": true' in status.stdout and '"eta": null' in status.stdout  # its clock stopped
    finish_again(tmp_path, cfg, src, shd_env, one_job(tmp_path))
    assert standin.count_creates() == 4


def test_a_source_changed_after_ctrl_c_fails_its_old_job_instead_of_mixing_the_two(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Stopped, then the file is edited in place: its job's frames (paid for) are of the old content, its soundtrack
    and the frames still to extract would be of the new. `shd run` fails that job saying why; `shd process` on the
    new content makes a job of its own."""
    standin.set_latency("stability-ai/sdxl", 0.0, 4.0)
    cfg = make_config()
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48))
    interrupted_while_painting(src, cfg, standin, shd_env, tmp_path, signal.SIGINT)
    old = one_job(tmp_path)
    make_video(tmp_path / "new.mp4", seconds=3.0, size=(64, 48)).replace(src)  # edited in place
    standin.set_latency("stability-ai/sdxl", 0.0, 0.01)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        (job,) = wait_for("the old job failed", lambda: [j for j in status_json(cfg, shd_env, tmp_path)
                                                         if j["state"] == "failed"])
    assert job["id"] == old and job["error"] == (
        f"{src}: changed since its job started (its frames and what was paid for are of the earlier content); "
        "`shd process` on it starts a new job, reusing what matches")
    assert not list((tmp_path / "outbox").glob("*.mp4"))  # nothing published of the mix
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert abs(probe_duration(Path(r.stdout.strip())) - 3.0) <= 0.1


def test_refused_credentials_end_it_at_once_with_exit_6_and_the_job_is_kept(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config({"pipeline": {"audio": "none"}, "replicate": {"auth_recheck": 3600}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    standin.set_token("r8_the_one_that_works")
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path, timeout=60)
    assert r.returncode == 6, r.stderr[-3000:]
    last = reason(r.stderr)
    assert "Replicate refused the credentials (401)" in last and last.endswith(RESUMES)
    assert standin.count_creates() == 0
    finish_again(tmp_path, cfg, src, dict(shd_env, REPLICATE_API_TOKEN="r8_the_one_that_works"), one_job(tmp_path))


def test_an_unreachable_api_ends_it_after_the_patience_with_exit_6_and_no_attempt_spent(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    plug = Plug(int(standin.url.rsplit(":", 1)[1]))  # not pushed: connection refused
    env = dict(shd_env, REPLICATE_BASE_URL=plug.url)
    cfg = make_config({"pipeline": {"audio": "none"},
                       "replicate": {"unreachable_patience": 1.0, "max_attempts": 1, "inline_max_kb": 256}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    r = run_shd("process", str(src), "--config", str(cfg), env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 6, r.stderr[-3000:]
    last = reason(r.stderr)
    assert last.startswith("shd: waiting for Replicate: unreachable since ") and "ConnectError" in last
    assert "gave up after 1 s (replicate.unreachable_patience)" in last and last.endswith(RESUMES)
    assert set(ledger(tmp_path)) <= {"refused"}  # creates that never reached the server: not paid attempts
    plug.push()
    try:
        finish_again(tmp_path, cfg, src, env, one_job(tmp_path))
    finally:
        plug.pull()
    assert standin.count_creates() == 4 and "failed" not in ledger(tmp_path)


def test_a_locked_database_ends_it_with_exit_5_and_the_job_resumes_later(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Another program holds the database's write lock longer than SQLite waits (10 s) while the job starts (its
    frames extracted at the speed of playback): the job is kept, not failed, `shd process` says so with exit 5, and
    the same file again finishes it without paying twice."""
    slow = make_config({"pipeline": {"audio": "none"}, "ffmpeg": {"path": slow_ffmpeg(tmp_path)}}, "slow.toml")
    src = make_video(tmp_path / "clip.mp4", seconds=6.0, size=(64, 48), audio=False)
    proc = start_process(src, slow, shd_env, tmp_path)
    try:
        db = tmp_path / "state" / "shd.db"
        wait_for("the job recorded", lambda: db.exists() and Store.open_readonly(db).jobs())
        assert proc.stderr is not None
        seen = []
        with closing(sqlite3.connect(tmp_path / "state" / "shd.db", isolation_level=None, timeout=30)) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            for line in proc.stderr:  # held until the job has given up on the database, then let go
                seen.append(line)
                if "job_deferred_will_retry" in line:
                    break
        err = "".join(seen) + proc.stderr.read()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5, err[-3000:]
    last = reason(err)
    assert "database is locked" in last and last.endswith(RESUMES)
    assert "Traceback" not in err
    job_id = one_job(tmp_path)
    assert Store.open_readonly(tmp_path / "state" / "shd.db").job(job_id).state in ("queued", "extracting")
    fast = make_config({"pipeline": {"audio": "none"}})  # another ffmpeg is not another painting: the job resumes
    finish_again(tmp_path, fast, src, shd_env, job_id)
    assert standin.count_creates() == 12


def test_a_log_that_cannot_be_written_neither_hangs_nor_sinks_the_job(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """The reader of its log goes away while predictions are in flight (`shd process ... 2>&1 | head`), or the log
    file's disk is full: the lines are lost, the work is not. Before, the first worker to log died with the
    BrokenPipeError, its task dropped, and `shd process` waited for ever on frames nobody painted."""
    standin.set_latency("stability-ai/sdxl", 0.2, 0.2)  # paintings still in flight when the log's reader goes
    cfg = make_config()
    src = make_video(tmp_path / "clip.mp4", seconds=4.0, size=(64, 48))
    out_file = (tmp_path / "stdout.txt").open("w")
    proc = start_process(src, cfg, shd_env, tmp_path, stdout=out_file)
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"prediction_created"' in line and '"stage": "image"' in line:
            break
    proc.stderr.close()  # the reader goes away
    try:
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        out_file.close()
    out = Path((tmp_path / "stdout.txt").read_text().strip())
    assert out.is_file() and out.with_suffix(".srt").is_file()
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    (job,) = store.jobs()
    assert job.state == "done" and standin.count_creates() == 8  # each frame's prompt and painting, paid once
    assert sorted(p.status for p in store.predictions(job.id)) == ["succeeded"] * 8

    full = run_shd("process", str(make_video(tmp_path / "other.mp4", seconds=1.0, size=(64, 48))), "--config",
                   str(cfg), "--log-file", "/dev/full", env=shd_env, cwd=tmp_path)
    assert full.returncode == 0 and Path(full.stdout.strip()).is_file(), full.stderr
    assert full.stderr.splitlines()[-1] == ("shd: some log lines could not be written (OSError: [Errno 28] No space "
                                            "left on device); the work went on without them")

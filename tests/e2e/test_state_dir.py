"""The state directory: one daemon at a time, `shd process` beside a daemon, a damaged database, a full disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import run_shd
from tests.e2e.harness import Daemon, slow_ffmpeg, start_process, status_json, wait_for
from tests.standin import StandIn
from tests.videos import make_video

pytestmark = pytest.mark.slow


def paid_once_per_frame_and_stage(standin: StandIn) -> bool:
    prompts = Counter(p.input_sha256["image"] for p in standin.predictions(model="methexis-inc/img2prompt"))
    images = Counter(p.input["prompt"] for p in standin.predictions(model="stability-ai/sdxl"))
    return max(prompts.values()) == 1 and max(images.values()) == 1


def test_a_second_daemon_on_the_same_state_directory_exits_2_naming_the_first(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config()
    with Daemon(cfg, shd_env, tmp_path) as first:
        first.ready()
        assert first.proc is not None
        second = run_shd("run", "--config", str(cfg), env=shd_env, cwd=tmp_path, timeout=30)
        assert second.returncode == 2, second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith("shd: ") and f"pid {first.proc.pid}" in line
        assert str(tmp_path / "state") in line
        assert "Traceback" not in second.stderr
        # The first one is unharmed and still works.
        make_video(tmp_path / "inbox" / "clip.mp4", seconds=1.0)
        (job,) = wait_for("the job done", lambda: [j for j in status_json(cfg, shd_env, tmp_path)
                                                   if j["state"] == "done"])
        assert first.alive
    assert paid_once_per_frame_and_stage(standin)


def test_process_beside_a_running_daemon_hands_its_job_over_and_follows_it(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """`shd process` while a daemon holds the state directory: the daemon does the work (once), and the process
    exits as it would have, printing the output path; a bad input still exits 3 with its reason."""
    cfg = make_config()
    src = make_video(tmp_path / "clip.mp4", seconds=2.0)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        assert d.proc is not None
        r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert f"daemon (pid {d.proc.pid})" in r.stderr
        out = Path(r.stdout.strip())
        assert out == tmp_path / "outbox" / "clip.mp4" and out.is_file()
        bad = tmp_path / "notes.mp4"
        bad.write_text("not a video\n" * 20)
        r = run_shd("process", str(bad), "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 3 and str(bad) in r.stderr.strip().splitlines()[-1]
        assert bad.exists()  # a `shd process` source is never moved, whoever works on it
        assert d.alive
    assert standin.count_creates() == 4 and paid_once_per_frame_and_stage(standin)


def test_a_daemon_started_while_process_works_waits_for_it_then_starts(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config({"ffmpeg": {"path": slow_ffmpeg(tmp_path)}})
    src = make_video(tmp_path / "clip.mp4", seconds=3.0)
    proc = start_process(src, cfg, shd_env, tmp_path)
    try:
        db = tmp_path / "state" / "shd.db"
        wait_for("the process working", lambda: db.exists() and status_json(cfg, shd_env, tmp_path))
        with Daemon(cfg, shd_env, tmp_path) as d:
            waiting = d.wait_log("waiting_for_state_dir")
            assert waiting["holder_pid"] == proc.pid and waiting["holder"] == "process"
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            d.ready(timeout=30)  # it starts once the process is done
            (job,) = status_json(cfg, shd_env, tmp_path)
            assert job["state"] == "done" and job["output"] == out.strip()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert standin.count_creates() == 6 and paid_once_per_frame_and_stage(standin)


def corrupt_middle_pages(db: Path) -> None:
    """Overwrite every page of `db` but the first and the last with garbage, as a bad disk or a stray write
    would."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    pages = len(data) // page
    assert pages >= 4, pages
    for n in range(1, pages - 1):
        data[n * page:(n + 1) * page] = bytes((i * 37 + n) % 251 for i in range(page))
    db.write_bytes(bytes(data))


def test_a_damaged_database_is_a_clear_error_and_nothing_is_claimed(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config()
    for i in range(2):
        src = make_video(tmp_path / f"clip{i}.mp4", seconds=2.0)
        assert run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path).returncode == 0
    paid = standin.count_creates()  # 8, less the prompts the second run reused (the clips' frames are alike)
    db = tmp_path / "state" / "shd.db"
    assert not Path(f"{db}-wal").exists()  # everything is in the main file
    corrupt_middle_pages(db)
    job_ids = [p.name for p in (tmp_path / "state" / "jobs").iterdir()]
    inbox = tmp_path / "inbox"
    make_video(inbox / "new.mp4", seconds=1.0)

    def assert_clear(r: subprocess.CompletedProcess[str]) -> None:
        assert r.returncode == 5, (r.args, r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith(f"shd: {db}: the database is damaged"), line
        assert ".recover" in line and "move it aside" in line

    assert_clear(run_shd("status", "--config", str(cfg), env=shd_env, cwd=tmp_path))
    assert_clear(run_shd("status", "--json", "--config", str(cfg), env=shd_env, cwd=tmp_path))
    assert_clear(run_shd("retry", job_ids[0], "--config", str(cfg), env=shd_env, cwd=tmp_path))
    assert_clear(run_shd("process", str(tmp_path / "clip0.mp4"), "--config", str(cfg), env=shd_env,
                         cwd=tmp_path))
    assert_clear(run_shd("run", "--config", str(cfg), env=shd_env, cwd=tmp_path, timeout=60))
    assert (inbox / "new.mp4").is_file()  # not claimed: it could not have been recorded
    assert sorted(p.name for p in (tmp_path / "state" / "jobs").iterdir()) == sorted(job_ids)
    assert standin.count_creates() == paid  # the two good runs, nothing since


def test_a_full_job_folder_defers_the_job_and_a_restart_finishes_it(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, tmpfs) -> None:
    """The state directory on a small tmpfs fills up during extraction: the job is deferred with a loud log line,
    nothing is blamed on the video or moved to failed/; once there is room, it finishes without paying twice."""
    state = tmpfs(tmp_path / "state", "32m")
    cfg = make_config({"pipeline": {"fps": 4.0, "audio": "none"}})
    src = make_video(tmp_path / "staging" / "clip.mp4", seconds=4.0, size=(640, 480), audio=False)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        st = os.statvfs(state)
        room = src.stat().st_size + 600_000  # the claim's copy fits, 16 frames of 640x480 do not
        ballast = state / "ballast"
        ballast.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - room))
        os.rename(src, tmp_path / "inbox" / "clip.mp4")
        deferred = d.wait_log("job_deferred_will_retry", timeout=60)
        assert "no space left" in deferred["reason"].lower()
        assert "Traceback" not in "\n".join(d.lines)
        (job,) = status_json(cfg, shd_env, tmp_path)
        assert job["state"] in ("extracting", "running") and job["error"] is None
        assert not (state / "failed").exists()
        assert d.alive
        ballast.unlink()
        d.signal(signal.SIGTERM)
        assert d.proc is not None and d.proc.wait(10) == 0
    with Daemon(cfg, shd_env, tmp_path) as d2:
        d2.ready()
        (job,) = wait_for("the job done", lambda: [j for j in status_json(cfg, shd_env, tmp_path)
                                                   if j["state"] == "done"], timeout=90)
    assert job["frames"]["generated"] == 16 and Path(job["output"]).is_file()
    assert paid_once_per_frame_and_stage(standin)


def test_process_on_a_full_disk_exits_4_and_keeps_its_job(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, tmpfs) -> None:
    state = tmpfs(tmp_path / "state", "32m")
    cfg = make_config({"pipeline": {"fps": 4.0, "audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=4.0, size=(640, 480), audio=False)
    st = os.statvfs(state)
    (state / "ballast").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 600_000))
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 4, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert "no space left on device" in line
    assert line.endswith("is recorded: `shd process` (the same file) or `shd run` resumes it")
    assert "Traceback" not in r.stderr
    (job,) = status_json(cfg, shd_env, tmp_path)
    assert job["state"] in ("extracting", "running") and job["error"] is None
    assert src.is_file()


def test_process_following_a_daemon_that_stops_finishes_the_job_itself(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    standin.set_latency("stability-ai/sdxl", 0.05, 1.0)
    cfg = make_config()
    src = make_video(tmp_path / "clip.mp4", seconds=3.0)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        proc = start_process(src, cfg, shd_env, tmp_path)
        try:
            wait_for("an image being painted for the handed-over job",
                     lambda: standin.count_creates("stability-ai/sdxl") >= 1)
            rc, _ = d.terminate()
            assert rc == 0
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert "handed to the daemon" in err and "goes on here" in err
    assert Path(out.strip()) == tmp_path / "outbox" / "clip.mp4" and Path(out.strip()).is_file()
    assert standin.count_creates() == 6 and paid_once_per_frame_and_stage(standin)


def test_process_following_a_daemon_held_by_refused_credentials_ends_with_exit_6(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """The daemon's heartbeat says why it is paused: a follower does not wait for ever on a token only a person
    can fix; it says so and ends, and the daemon keeps the job."""
    token_file = tmp_path / "token"
    token_file.write_text("r8_wrong\n")
    env = {k: v for k, v in shd_env.items() if k != "REPLICATE_API_TOKEN"}
    cfg = make_config({"replicate": {"token_file": str(token_file), "auth_recheck": 3600}})
    src = make_video(tmp_path / "clip.mp4", seconds=1.0)
    with Daemon(cfg, env, tmp_path) as d:
        d.ready()
        r = run_shd("process", str(src), "--config", str(cfg), env=env, cwd=tmp_path, timeout=60)
        assert r.returncode == 6, r.stderr[-2000:]
        (job,) = status_json(cfg, env, tmp_path)
        last = r.stderr.strip().splitlines()[-1]
        assert "Replicate refused the credentials (401)" in last
        assert last.endswith(f"the daemon (pid {d.proc.pid}) goes on with job {job['id']} once that is fixed")
        assert job["state"] in ("extracting", "running") and d.alive


def test_a_second_process_waiting_for_the_first_is_refused_the_output_the_first_wrote_before_paying(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Two `shd process` of one file to one `--output`, no daemon: the second waits for the first, which writes
    the file. The second then refuses it (exit 2) as it would have at its start, instead of paying for every
    painting again and failing with 'already exists' once it has."""
    standin.set_latency("stability-ai/sdxl", 0.0, 1.0)
    cfg = make_config({"pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    out = tmp_path / "out.mp4"
    args = [sys.executable, "-m", "shd", "process", str(src), "--config", str(cfg), "--output", str(out)]
    first = subprocess.Popen(args, env=shd_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_for("the first at work (it holds the state directory)",
                 lambda: standin.count_creates("stability-ai/sdxl") >= 1)
        second = run_shd(*args[3:], env=shd_env, cwd=tmp_path)
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    assert "waiting for `shd process`" in second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"shd: {out}: already exists; choose another --output, or add --overwrite to replace it")
    assert standin.count_creates() == 4 and len(status_json(cfg, shd_env, tmp_path)) == 1  # nothing paid twice

"""Every row of the README's exit-code table is what the commands do, with one line saying why and no traceback.

    0    everywhere (e.g. test_process.py)
    1    test_a_job_that_fails_exits_1, test_a_job_canceled_while_shd_process_works_on_it_exits_1_saying_so (and
         an unexpected error, which no test can provoke on purpose)
    2    test_bad_usage_exits_2_with_one_line, test_an_inbox_that_cannot_be_a_folder_exits_2; bad config and no
         token: test_process.py; another daemon: test_state_dir.py; an --output that exists: test_publishing.py
    3    test_process.py::test_bad_inputs_get_a_one_line_reason_a_failed_job_and_stay_untouched
    4    test_ffmpeg_failing_on_a_file_shd_made_exits_4; a full disk: test_state_dir.py
    5    a damaged database: test_state_dir.py; a locked one: test_process_ends.py
    6    refused credentials, an unreachable API: test_process_ends.py; a cancel that did not reach Replicate:
         test_control.py
    8    a budget cap: test_bill_end_to_end.py::test_shd_process_at_a_cap_ends_with_exit_8_saying_why; following a
         daemon's held job: test_bill_end_to_end.py::test_the_daemon_holds_at_the_daily_cap_says_why_and_resumes...
    130  test_the_daemon_stopped_by_ctrl_c_exits_130; `shd process`: test_process_ends.py
    141  test_a_reader_that_goes_away_exits_141_quietly
"""

from __future__ import annotations

import shutil
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_shd
from tests.e2e.harness import Daemon, start_process, wait_for
from tests.standin import StandIn
from tests.videos import ffmpeg_exe, make_video

pytestmark = pytest.mark.slow


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shd: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_bad_usage_exits_2_with_one_line(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                         make_config) -> None:
    cfg = make_config({"pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    assert run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path).returncode == 0

    def shd(*args: str) -> subprocess.CompletedProcess[str]:
        return run_shd(*args, "--config", str(cfg), env=shd_env, cwd=tmp_path)

    for command in ("status", "retry", "cancel"):
        r = shd(command, "nosuchjob")
        assert r.returncode == 2 and one_line(r) == "shd: no job matches 'nosuchjob'"
    (job_id,) = [line.split()[0] for line in shd("status").stdout.splitlines()[2:-1]]  # daemon, header ... spend
    r = shd("retry", job_id)
    assert r.returncode == 2 and "is done and none of its frames failed; nothing to retry" in one_line(r)
    r = shd("cancel", job_id)
    assert r.returncode == 2 and one_line(r) == f"shd: job {job_id} is already done"
    assert shd("status", "--interval", "x").returncode == 2  # argparse's own usage error
    for interval in ("0", "nan", "inf", "1e300", "1e-300"):  # a traceback, or a busy loop, on a terminal before
        r = shd("status", "--watch", "--interval", interval)
        assert r.returncode == 2 and "--interval must be 0.1 to 3600 seconds" in r.stderr.splitlines()[-1], r.stderr
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    queued = make_video(inbox / "queued.mp4", seconds=1.0, size=(64, 48), audio=False)
    creates = standin.count_creates()
    elsewhere = tmp_path / "link-to-queued.mp4"
    elsewhere.symlink_to(queued)  # the file read through a link is the inbox's all the same
    for given in (queued, inbox / ".." / "inbox" / "queued.mp4", elsewhere):  # the daemon's: never two jobs of it
        r = shd("process", str(given))
        assert r.returncode == 2 and one_line(r) == (f"shd: {given}: it is in the inbox ({inbox}), where `shd run` "
                                                     "takes it as a job of its own; follow that job with `shd "
                                                     "status`, or give `shd process` a video from elsewhere")
    assert queued.exists() and standin.count_creates() == creates and len(shd("status").stdout.splitlines()) == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("[replicate]\nimage_input = 5\n")  # the wrong type the issue found (a traceback then)
    r = run_shd("status", "--config", str(bad), env=shd_env, cwd=tmp_path)
    assert r.returncode == 2 and "replicate.image_input must be a table, not 5" in one_line(r)


def test_an_inbox_that_cannot_be_a_folder_exits_2(tmp_path: Path, shd_env: dict[str, str], make_config) -> None:
    (tmp_path / "inbox").write_text("a file where the inbox folder should be")
    r = run_shd("run", "--config", str(make_config()), env=shd_env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert "inbox: cannot be the inbox folder (a file is in the way); see paths.inbox" in r.stderr.splitlines()[-1]
    assert "Traceback" not in r.stderr
    (tmp_path / "inbox").unlink()
    shutil.rmtree(tmp_path / "state")  # made before the inbox was looked at
    (tmp_path / "state").write_text("a file where the state directory should be")
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    for command in (["run"], ["process", str(src)]):  # a bug's exit 1 (and under systemd a restart loop) before
        r = run_shd(*command, "--config", str(make_config()), env=shd_env, cwd=tmp_path, timeout=60)
        assert r.returncode == 2 and one_line(r) == (f"shd: {tmp_path / 'state'}: cannot be the state_dir folder "
                                                     "(a file is in the way); see paths.state_dir"), r.stderr


def test_a_job_that_fails_exits_1(tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    standin.fail_predictions("NSFW content detected. Try running it again.", model="stability-ai/sdxl")
    cfg = make_config({"pipeline": {"on_frame_failure": "fail", "audio": "none"}, "replicate": {"model_retries": 0}})
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 1 and "could not be painted" in r.stderr.strip().splitlines()[-1]


def test_a_job_canceled_while_shd_process_works_on_it_exits_1_saying_so(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    standin.set_latency("stability-ai/sdxl", 0.0, 30.0)  # still painting when the cancel comes
    cfg = make_config({"pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    proc = start_process(src, cfg, shd_env, tmp_path)
    try:
        wait_for("the painting in flight", lambda: standin.count_creates("stability-ai/sdxl") == 1)
        job_id = json.loads(run_shd("status", "--json", "--config", str(cfg), env=shd_env,
                                    cwd=tmp_path).stdout)["jobs"][0]["id"]
        assert run_shd("cancel", job_id, "--config", str(cfg), env=shd_env, cwd=tmp_path).returncode == 0
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and out == "" and err.strip().splitlines()[-1] == "shd: canceled by the user"


def test_ffmpeg_failing_on_a_file_shd_made_exits_4(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                                  make_config) -> None:
    broken = tmp_path / "ffmpeg-that-cannot-stitch"
    broken.write_text(f'#!/bin/sh\ncase "$*" in *video.mp4*) echo "Conversion failed!" >&2; exit 1;; esac\n'
                      f'exec "{ffmpeg_exe()}" "$@"\n')
    broken.chmod(0o755)
    cfg = make_config({"ffmpeg": {"path": str(broken)}, "pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 4 and "Conversion failed!" in r.stderr.strip().splitlines()[-1]


def test_the_daemon_stopped_by_ctrl_c_exits_130(tmp_path: Path, shd_env: dict[str, str], make_config) -> None:
    with Daemon(make_config(), shd_env, tmp_path) as d:
        d.ready()
        d.signal(signal.SIGINT)
        # How long it takes is the benchmark's business: on a loaded machine it can pass 10 s.
        assert d.proc is not None and d.proc.wait(60) == 130


def test_a_reader_that_goes_away_exits_141_quietly(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                                   make_config) -> None:
    """`shd status JOB | grep -q done`: grep leaves at its first match; shd must not print a BrokenPipeError."""
    cfg = make_config({"pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    assert run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path).returncode == 0
    for args in (["status"], ["status", "--json"]):
        proc = subprocess.Popen([sys.executable, "-m", "shd", *args, "--config", str(cfg)], env=shd_env,
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before shd writes a byte
        err = proc.stderr.read()
        assert proc.wait(30) == 141 and err == "", err

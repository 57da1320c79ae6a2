"""The bill end to end: the real CLI and daemon, real ffmpeg and SQLite, the replicate client over HTTPS to the
stand-in, whose predictions report a fixed `metrics.predict_time` per model so that every cost is an exact figure."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from shd.pricing import usd
from tests.conftest import run_shd
from tests.e2e.harness import Daemon, status_json, wait_for
from tests.standin import StandIn
from tests.videos import ffmpeg_exe, make_still_video, make_ten_hour_still, make_video, understate_duration

pytestmark = pytest.mark.slow

IMG2PROMPT, SDXL = "methexis-inc/img2prompt", "stability-ai/sdxl"
PROMPT_S, IMAGE_S = 2.0, 4.0   # the predict_time the stand-in reports for each model


@pytest.fixture
def billed(standin: StandIn) -> StandIn:
    standin.set_predict_time(IMG2PROMPT, PROMPT_S)
    standin.set_predict_time(SDXL, IMAGE_S)
    return standin


def status(cfg: Path, env: dict[str, str], cwd: Path, *args: str) -> dict:
    r = run_shd("status", *args, "--json", "--config", str(cfg), env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def decoded_md5(video: Path) -> str:
    return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-map", "0:v", "-f", "md5", "-"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_video_processed_again_pays_for_no_prompt_and_with_a_fixed_seed_for_nothing(
        tmp_path: Path, billed: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Run 1 pays 3 prompts and 3 paintings at their exact prices; the same video again with the same fixed seed
    pays nothing and gives the same video; with random seeds it pays for new paintings only. Status shows each
    job's cost and reuse and the spend; the estimate learns each model's typical predict_time from the ledger."""
    src = make_video(tmp_path / "clip.mp4", seconds=3.0, size=(64, 48), audio=False)
    seeded = make_config({"replicate": {"seed": 5}, "pipeline": {"audio": "none"}})
    one_run = 3 * PROMPT_S * 0.000225 + 3 * IMAGE_S * 0.000975

    first = run_shd("process", str(src), "--config", str(seeded), env=shd_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "shd: estimate: 3 frames, 6 predictions, about $0.0427 and 0:22 at concurrency 4" in first.stderr
    assert billed.count_creates(IMG2PROMPT) == 3 and billed.count_creates(SDXL) == 3
    (job,) = status(seeded, shd_env, tmp_path)["jobs"]
    assert job["cost"] == {"usd": pytest.approx(one_run), "predict_seconds": 3 * (PROMPT_S + IMAGE_S),
                           "predictions": 6, "reused": 0, "saved_usd": 0.0}
    assert job["estimate"] == {"usd": pytest.approx(0.04275), "seconds": 22.5} and job["held"] is None

    again = run_shd("process", str(src), "--config", str(seeded), env=shd_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert billed.count_creates() == 6  # not one more creation
    assert decoded_md5(Path(again.stdout.strip())) == decoded_md5(Path(first.stdout.strip()))
    random_seeds = make_config({"pipeline": {"audio": "none"}})
    third = run_shd("process", str(src), "--config", str(random_seeds), env=shd_env, cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert billed.count_creates(IMG2PROMPT) == 3 and billed.count_creates(SDXL) == 6  # new paintings only

    s = status(random_seeds, shd_env, tmp_path)
    second_job, third_job = s["jobs"][1:]
    assert second_job["cost"] == {"usd": 0.0, "predict_seconds": 0.0, "predictions": 0, "reused": 6,
                                  "saved_usd": pytest.approx(one_run)}
    assert third_job["cost"]["predictions"] == 3 and third_job["cost"]["reused"] == 3
    total = one_run + 3 * IMAGE_S * 0.000975
    assert s["spend"] == {"today_usd": pytest.approx(total), "month_usd": pytest.approx(total),
                          "total_usd": pytest.approx(total)}
    table = run_shd("status", "--config", str(random_seeds), env=shd_env, cwd=tmp_path).stdout
    assert f"spend: today {usd(s['spend']['today_usd'])}, this month" in table
    assert "COST" in table and "REUSED" in table

    est = run_shd("estimate", str(src), "--config", str(random_seeds), env=shd_env, cwd=tmp_path)
    assert est.returncode == 0, est.stderr
    assert "3 frames, 6 predictions" in est.stdout
    assert f"3 x {PROMPT_S:.1f} s at $0.000225/s" in est.stdout and f"3 x {IMAGE_S:.1f} s at $0.000975/s" in est.stdout
    assert "predict_time: median of 3 in the ledger" in est.stdout  # prompts: 3 paid (the reuses are no run)
    assert billed.count_creates() == 9  # estimating paid for nothing


def test_identical_frames_in_one_video_make_one_prompt_creation(
        tmp_path: Path, billed: StandIn, shd_env: dict[str, str], make_config) -> None:
    src = make_still_video(tmp_path / "black.mp4", seconds=4.0)
    cfg = make_config({"pipeline": {"audio": "none"}})
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert billed.count_creates(IMG2PROMPT) == 1 and billed.count_creates(SDXL) == 4
    (job,) = status(cfg, shd_env, tmp_path)["jobs"]
    assert job["frames"]["generated"] == 4 and job["cost"]["reused"] == 3
    assert job["cost"]["saved_usd"] == pytest.approx(3 * PROMPT_S * 0.000225)


def test_a_file_whose_header_claims_ten_hours_is_refused_before_any_create(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """1.4 KB, one frame lasting ten hours: 36,000 frames at fps=1. The daemon moves it to failed/ with the count
    and the estimate, and creates nothing; `shd process` refuses it the same way (exit 3)."""
    cfg = make_config()
    big = make_ten_hour_still(tmp_path / "inbox" / "tiny.mp4")
    assert big.stat().st_size < 2000
    reason = ("36000 frames at fps=1 (by its header) is over pipeline.max_frames = 3600: refused "
              "(estimated $513.00 for 72000 predictions)")
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        note = tmp_path / "state" / "failed" / "tiny.mp4.error.txt"
        wait_for("the file moved aside", note.exists)
        # The reason names the file where it is now (failed/), as every failed job's does.
        assert note.read_text().splitlines()[0] == f"{tmp_path / 'state' / 'failed' / 'tiny.mp4'}: {reason}"
        assert status_json(cfg, shd_env, tmp_path)[0]["error"] == note.read_text().splitlines()[0]
        assert d.alive
    assert standin.count_creates() == 0
    r = run_shd("process", str(make_ten_hour_still(tmp_path / "again.mp4")), "--config", str(cfg), env=shd_env,
                cwd=tmp_path)
    assert r.returncode == 3 and r.stderr.strip().splitlines()[-1] == f"shd: {tmp_path / 'again.mp4'}: {reason}"
    est = run_shd("estimate", str(tmp_path / "again.mp4"), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert "36000 frames, 72000 predictions" in est.stdout  # the estimate, then the same refusal and exit code
    assert est.returncode == 3 and est.stderr.strip() == f"shd: {tmp_path / 'again.mp4'}: {reason}"
    assert standin.count_creates() == 0


def test_a_file_that_decodes_into_more_frames_than_its_header_says_is_refused_at_the_limit(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Its header says 2 s, it decodes 10 frames: refused when extraction passes max_frames = 5, and nothing was
    paid for beyond the 2 frames its header promised."""
    src = understate_duration(make_video(tmp_path / "real.mp4", seconds=10.0, size=(32, 32), audio=False),
                              tmp_path / "liar.mp4")
    cfg = make_config({"pipeline": {"max_frames": 5, "audio": "none"}})
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert ("more than 5 frames at fps=1 (decoded; its header promised 2) is over pipeline.max_frames = 5"
            in r.stderr)
    assert standin.count_creates(IMG2PROMPT) <= 2


def test_the_daemon_holds_at_the_daily_cap_says_why_and_resumes_after_a_raise_and_reload(
        tmp_path: Path, billed: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Every prediction costs exactly $0.01 (10 s at $0.001/s, as expected): a $0.035 day allows three, then the
    job is held (status, STATUS=, a loud log line), nothing is failed; raised and reloaded, it finishes having paid
    once per frame and stage."""
    billed.set_predict_time(IMG2PROMPT, 10.0)
    billed.set_predict_time(SDXL, 10.0)
    prices = {"per_second": 0.001, "typical_seconds": 10.0}
    overrides = {"pipeline": {"audio": "none"}, f'prices."{IMG2PROMPT}"': prices, f'prices."{SDXL}"': prices}
    cfg = make_config({**overrides, "budget": {"daily_usd": 0.035}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=3.0, size=(64, 48), audio=False)
    why = "daily budget $0.035 reached; resumes at 00:00 UTC, or raise budget.daily_usd and reload"
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        est = d.wait_log("job_estimate")  # logged as the daemon takes the file, before anything is paid
        assert (est["frames"], est["predictions"], est["usd"]) == (3, 6, pytest.approx(0.06))
        assert d.wait_log("budget_reached")["reason"] == why
        d.wait_message(f"PAUSED: {why}; HELD: 1 job(s)")
        s = wait_for("the job held, nothing in flight", lambda: (s := status(cfg, shd_env, tmp_path))
                     and s["jobs"][0]["held"] and s["jobs"][0]["cost"]["predictions"] == 3 and s)
        assert billed.count_creates() == 3 and s["spend"]["today_usd"] == pytest.approx(0.03)  # <= the cap
        assert s["jobs"][0]["state"] in ("extracting", "running") and s["jobs"][0]["frames"]["failed"] == 0
        assert s["jobs"][0]["estimate"] == {"usd": pytest.approx(0.06), "seconds": 15.0}
        assert f"held {s['jobs'][0]['id']}: {why}" in run_shd("status", "--config", str(cfg), env=shd_env,
                                                               cwd=tmp_path).stdout
        # The daemon is paused by it, as by any hold (its heartbeat): status --json's daemon object says so.
        daemon = wait_for("the daemon paused by the budget", lambda: (s := status(cfg, shd_env, tmp_path))
                          and s["daemon"]["paused"] == why and s["daemon"])
        assert daemon["running"] and daemon["pid"] == d.proc.pid
        # `shd process` hands its video to the daemon, which holds it too: it says so and ends.
        other = make_video(tmp_path / "other.mp4", seconds=1.0, size=(64, 48), audio=False)
        follower = run_shd("process", str(other), "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert follower.returncode == 8, follower.stderr
        assert "shd: estimate: about $0.02" in follower.stderr and f"shd: held: {why}" in follower.stderr
        assert billed.count_creates() == 3

        make_config({**overrides, "budget": {"daily_usd": 1.0}})
        d.signal(signal.SIGHUP)
        job, second = wait_for("both jobs done", lambda: (jobs := status_json(cfg, shd_env, tmp_path))
                               and all(j["state"] == "done" for j in jobs) and jobs)
        assert d.wait_log("budget_resumed")["job"] in (job["id"], second["id"])
    assert job["held"] is None and job["cost"]["predictions"] == 6 and job["cost"]["usd"] == pytest.approx(0.06)
    # Each paid once: other.mp4's one frame is clip.mp4's first (the same test pattern), so its prompt was reused.
    assert billed.count_creates(IMG2PROMPT) == 3 and billed.count_creates(SDXL) == 4
    assert second["cost"]["reused"] == 1


def test_shd_process_at_a_cap_ends_with_exit_8_saying_why(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """A job estimated over budget.per_job_usd is held before its first paid call; `shd process` says so and
    ends, the job kept (not failed) for `shd run`."""
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    cfg = make_config({"pipeline": {"audio": "none"}, "budget": {"per_job_usd": 0.01}})
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 8, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("shd: held: job estimated at $0.0143 for 1 frames, over budget.per_job_usd $0.01")
    assert "`shd run` resumes it" in last and r.stdout == ""
    assert standin.count_creates() == 0
    (job,) = status(cfg, shd_env, tmp_path)["jobs"]
    assert job["state"] in ("extracting", "running") and job["error"] is None
    # The budget raised, the same file again resumes that job (identity.py: a cap is not part of the work).
    cfg = make_config({"pipeline": {"audio": "none"}, "budget": {"per_job_usd": 1.0}})
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "the same file again: its unfinished job resumes" in r.stderr
    (done,) = status(cfg, shd_env, tmp_path)["jobs"]
    assert done["id"] == job["id"] and done["state"] == "done" and done["held"] is None
    assert standin.count_creates() == 2 and done["cost"]["predictions"] == 2


def test_a_job_its_own_cap_holds_does_not_keep_the_jobs_behind_it_waiting(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """One job at a time (pipeline.max_jobs = 1): a job held by budget.per_job_usd gives its slot up, so the next
    video in the inbox, within the cap, is painted meanwhile; the held one goes on after a raise and reload."""
    overrides = {"pipeline": {"audio": "none", "max_jobs": 1}}
    cfg = make_config({**overrides, "budget": {"per_job_usd": 0.03}})  # 3 frames: $0.0428; 1 frame: $0.0143
    make_video(tmp_path / "inbox" / "long.mp4", seconds=3.0, size=(64, 48), audio=False)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for("the long job held", lambda: (jobs := status_json(cfg, shd_env, tmp_path)) and jobs[0]["held"])
        short = make_video(tmp_path / "short.mp4", seconds=1.0, size=(64, 48), audio=False)
        short.rename(tmp_path / "inbox" / "short.mp4")
        held, done = wait_for("the short job done", lambda: (jobs := status_json(cfg, shd_env, tmp_path))
                              and len(jobs) == 2 and jobs[1]["state"] == "done" and jobs)
        assert held["held"].startswith("job estimated at $0.0428 for 3 frames") and held["cost"]["predictions"] == 0
        assert done["source"] == "short.mp4" and done["cost"]["predictions"] + done["cost"]["reused"] == 2
        make_config({**overrides, "budget": {"per_job_usd": 1.0}})
        d.signal(signal.SIGHUP)
        wait_for("the long job done", lambda: status_json(cfg, shd_env, tmp_path)[0]["state"] == "done")


def test_shd_process_alone_at_the_daily_cap_lets_what_is_in_flight_finish_then_ends_with_exit_8(
        tmp_path: Path, billed: StandIn, shd_env: dict[str, str], make_config) -> None:
    """No daemon: `shd process` itself holds at the daily cap. The predictions in flight finish and are counted
    (spend <= the cap), then it ends with exit 8 and the reason; the job is kept, not failed."""
    billed.set_predict_time(IMG2PROMPT, 10.0)
    billed.set_predict_time(SDXL, 10.0)
    prices = {"per_second": 0.001, "typical_seconds": 10.0}  # every prediction: $0.01, as expected
    cfg = make_config({"pipeline": {"audio": "none"}, f'prices."{IMG2PROMPT}"': prices, f'prices."{SDXL}"': prices,
                       "budget": {"daily_usd": 0.035}})
    src = make_video(tmp_path / "clip.mp4", seconds=3.0, size=(64, 48), audio=False)
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 8, r.stderr
    why = "daily budget $0.035 reached; resumes at 00:00 UTC, or raise budget.daily_usd and reload"
    assert r.stderr.strip().splitlines()[-1].startswith(f"shd: held: {why}") and r.stdout == ""
    s = status(cfg, shd_env, tmp_path)
    (job,) = s["jobs"]
    assert job["state"] in ("extracting", "running") and job["error"] is None and job["held"] == why
    assert billed.count_creates() == 3 and job["cost"]["predictions"] == 3  # all three finished and counted
    assert s["spend"]["today_usd"] == pytest.approx(0.03)

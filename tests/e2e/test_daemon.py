"""`shd run` as a real process: the watched inbox, claiming, bad files moved aside, signals, the notify protocol."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from shd.store import Store
from tests.conftest import run_shd
from tests.e2e.harness import Daemon, copy_slowly, slow_ffmpeg, status_json, wait_for
from tests.standin import StandIn
from tests.videos import ffmpeg_exe, has_audio, make_truncated, make_video, probe_duration

pytestmark = pytest.mark.slow

OTHER_FILM = "google-research/frame-interpolation:" + "1" * 64  # another version of FILM, for a reload


def done_jobs(cfg: Path, env: dict[str, str], cwd: Path, n: int = 1) -> list[dict]:
    jobs = status_json(cfg, env, cwd)
    finished = [j for j in jobs if j["state"] in ("done", "failed", "canceled")]
    return jobs if len(finished) >= n else []


@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_a_slowly_copied_video_becomes_a_job_only_when_complete(observer: str, tmp_path: Path, standin: StandIn,
                                                                shd_env: dict[str, str], make_config) -> None:
    """While the copy is still being written no job exists and the file stays in the inbox; afterwards the painted
    mp4 appears in the outbox and status reports the job done. With inotify and with the polling observer (network
    shares)."""
    src = make_video(tmp_path / "src.mp4", seconds=3.0)
    # Longer than a chunk's pause plus the status check between chunks.
    cfg = make_config({"watch": {"stable_seconds": 2.0, "observer": observer}})
    inbox = tmp_path / "inbox"
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        assert inbox.is_dir()

        def nothing_claimed_yet() -> None:
            assert status_json(cfg, shd_env, tmp_path) == []
            assert (inbox / "clip.mp4").exists()

        copy_slowly(src, inbox / "clip.mp4", chunks=6, pause=0.2, between=nothing_claimed_yet)
        out = tmp_path / "outbox" / "clip.mp4"
        wait_for("the painted video in the outbox", out.exists, timeout=60)
        (job,) = wait_for("the job done", lambda: done_jobs(cfg, shd_env, tmp_path))
        assert job["state"] == "done" and job["output"] == str(out)
        assert job["frames"]["generated"] == job["frames"]["total"] == 3
        assert not (inbox / "clip.mp4").exists()  # claimed: moved out of the inbox
        assert abs(probe_duration(out) - probe_duration(src)) <= 1 / 30 + 0.01 and has_audio(out)
        assert not [p for p in (tmp_path / "outbox").iterdir() if p.name.startswith(".")]
        assert d.alive


def test_temporary_names_are_ignored_until_renamed_and_existing_files_are_picked_up(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_video(inbox / "already-here.mp4", seconds=1.0)           # there before the daemon starts
    make_video(inbox / "later.mp4.part", seconds=1.0)              # a download in progress
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for("the existing file done", lambda: done_jobs(cfg, shd_env, tmp_path))
        assert (inbox / "later.mp4.part").exists()
        assert [j["source"] for j in status_json(cfg, shd_env, tmp_path)] == ["already-here.mp4"]
        os.rename(inbox / "later.mp4.part", inbox / "later.mp4")
        jobs = wait_for("the renamed file done", lambda: done_jobs(cfg, shd_env, tmp_path, 2))
        assert sorted(j["source"] for j in jobs) == ["already-here.mp4", "later.mp4"]
        assert all(j["state"] == "done" for j in jobs)


def test_bad_files_are_moved_aside_with_reasons_and_the_daemon_keeps_going(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    good = make_video(staging / "good.mp4", seconds=2.0)
    (staging / "notes.mp4").write_text("not a video at all\n" * 20)
    (staging / "empty.mov").write_bytes(b"")
    make_truncated(good, staging / "cut.mp4")
    # Its index first (faststart), then cut: ffmpeg opens it, and extraction fails only half-way.
    fast = tmp_path / "fast.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(good), "-c", "copy", "-movflags", "+faststart",
                    str(fast)], check=True)
    make_truncated(fast, staging / "cut-late.mp4", fraction=0.6)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        for f in staging.iterdir():
            os.rename(f, inbox / f.name)
        jobs = wait_for("all five jobs finished", lambda: done_jobs(cfg, shd_env, tmp_path, 5), timeout=90)
        by_name = {j["source"]: j for j in jobs}
        assert by_name["good.mp4"]["state"] == "done"
        failed = tmp_path / "state" / "failed"
        for name in ("notes.mp4", "empty.mov", "cut.mp4", "cut-late.mp4"):
            assert by_name[name]["state"] == "failed" and name in by_name[name]["error"]
            # The reason names where the file is now (failed/), not the job folder it was in.
            assert str(failed / name) in by_name[name]["error"] and "/jobs/" not in by_name[name]["error"]
            assert (failed / name).is_file(), name
            reason = (failed / f"{name}.error.txt").read_text()
            assert by_name[name]["error"] in reason
        assert "empty" in by_name["empty.mov"]["error"]
        assert list(inbox.iterdir()) == []
        # No extraction scratch folder is left behind by a file that turned out bad half-way (cut-late.mp4).
        assert list((tmp_path / "state" / "jobs").glob("*/extract.*")) == []
        assert d.alive


def test_notify_protocol_reload_and_prompt_sigterm(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                                   make_config) -> None:
    """READY once watching, STATUS lines, WATCHDOG pings; SIGHUP with a good config applies it (RELOADING then
    READY), with a bad one keeps the old; SIGTERM sends STOPPING and exits within a few seconds."""
    cfg = make_config()
    with Daemon(cfg, shd_env, tmp_path, watchdog_usec=400_000) as d:
        ready = d.ready()
        first = d.messages.index(next(m for m in d.messages if "READY=1" in m))
        assert "STATUS=" in d.messages[first] and "job(s) active" in d.messages[first]
        d.wait_message("WATCHDOG=1", timeout=5)
        mark = len(d.messages)
        logs_mark = len(d.lines)
        cfg.write_text(cfg.read_text().replace("concurrency = 4", "concurrency = 7"))
        d.signal(signal.SIGHUP)
        reloading = d.wait_message("RELOADING=1", after=mark)
        assert "MONOTONIC_USEC=" in reloading
        d.wait_message("READY=1", after=mark + 1)
        assert d.wait_log("reloaded", after=logs_mark)["concurrency"] == 7

        mark, logs_mark = len(d.messages), len(d.lines)
        good_text = cfg.read_text()
        cfg.write_text(good_text + "\n[pipeline]\nfps = -3\n")
        d.signal(signal.SIGHUP)
        refused = d.wait_log("reload_refused_keeping_old_config", after=logs_mark)
        assert str(cfg) in refused["error"] and "fps" in refused["error"]
        d.wait_message("READY=1", after=mark)
        assert d.alive and ready
        # A wrong type anywhere (it used to be an AttributeError and exit 1) is refused the same way.
        logs_mark = len(d.lines)
        cfg.write_text(good_text.replace("[replicate]\n", "[replicate]\nimage_input = 5\n")
                       .replace("[replicate.image_input]\n", "[replicate_image_input]\n"))
        d.signal(signal.SIGHUP)
        refused = d.wait_log("reload_refused_keeping_old_config", after=logs_mark)
        assert "replicate.image_input must be a table, not 5" in refused["error"]
        # What is built once at start is named, and kept until the next start; the rest applies.
        logs_mark = len(d.lines)
        cfg.write_text(good_text.replace("create_wait = 2", "create_wait = 3").replace("concurrency = 7",
                                                                                     "concurrency = 6")
                       .replace("[replicate]\n", f"[replicate]\nfilm_model = \"{OTHER_FILM}\"\n"))
        d.signal(signal.SIGHUP)
        assert d.wait_log("reload_needs_restart", after=logs_mark)["settings"] == ["replicate.create_wait",
                                                                                   "replicate.film_model"]
        assert d.wait_log("reloaded", after=logs_mark)["concurrency"] == 6
        assert d.alive
        cfg.write_text(good_text)
        # Still works after the refused reload.
        make_video(tmp_path / "inbox" / "after.mp4", seconds=1.0)
        wait_for("a job after the refused reload", lambda: done_jobs(cfg, shd_env, tmp_path))
        mark = len(d.messages)
        rc, took = d.terminate()
        assert rc == 0 and took < 5.0
        assert any("STOPPING=1" in m for m in d.messages[mark:])


def test_sigterm_mid_prediction_exits_promptly_and_the_next_start_resumes_without_paying_twice(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    standin.set_latency("stability-ai/sdxl", 0.05, 3.0)
    cfg = make_config({"replicate": {"create_wait": 1}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=3.0)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        db = tmp_path / "state" / "shd.db"

        def image_prediction_recorded() -> bool:
            if not db.exists():
                return False
            return any(p.stage == "image" and p.remote_id and p.status in ("starting", "processing")
                       for p in Store.open_readonly(db).predictions())

        wait_for("an image prediction running and recorded", image_prediction_recorded)
        rc, took = d.terminate()
        assert rc == 0 and took < 5.0
    (job,) = status_json(cfg, shd_env, tmp_path)
    assert job["state"] in ("extracting", "running")
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    live = [p for p in store.predictions(job["id"]) if p.status in ("starting", "processing")]
    assert live and all(p.remote_id for p in live)  # recorded, to be resumed
    standin.set_latency("stability-ai/sdxl", 0.05, 0.1)
    with Daemon(cfg, shd_env, tmp_path) as d2:
        d2.ready()
        (job,) = wait_for("the resumed job done", lambda: done_jobs(cfg, shd_env, tmp_path))
        assert job["state"] == "done"
    assert_one_prediction_per_frame_and_stage(standin, frames=3)


def assert_one_prediction_per_frame_and_stage(standin: StandIn, frames: int) -> None:
    """Each frame's image (by content) was sent to img2prompt once, and each prompt to SDXL once."""
    prompts = Counter(p.input_sha256["image"] for p in standin.predictions(model="methexis-inc/img2prompt"))
    images = Counter(p.input["prompt"] for p in standin.predictions(model="stability-ai/sdxl"))
    assert len(prompts) == frames and max(prompts.values()) == 1, prompts
    assert len(images) == frames and max(images.values()) == 1, images


@pytest.mark.parametrize("kill_at", ["extracting", "first_create", "image_running", "frame_generated", "stitching"])
def test_sigkill_at_any_point_then_restart_completes_without_paying_twice(
        kill_at: str, tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    standin.set_latency("methexis-inc/img2prompt", 0.05, 0.3)
    standin.set_latency("stability-ai/sdxl", 0.05, 0.6)
    base = {"replicate": {"concurrency": 2, "create_wait": 1}}
    slow = kill_at in ("extracting", "stitching")  # make the ffmpeg step last long enough to be killed in
    cfg = make_config({**base, "ffmpeg": {"path": slow_ffmpeg(tmp_path)}} if slow else base)
    src = make_video(tmp_path / "src.mp4", seconds=4.0)
    os.makedirs(tmp_path / "inbox")
    os.link(src, tmp_path / "inbox" / "clip.mp4")
    db = tmp_path / "state" / "shd.db"

    def job_state() -> str | None:
        jobs = status_json(cfg, shd_env, tmp_path)
        return jobs[0]["state"] if jobs else None

    def generated() -> int:
        jobs = status_json(cfg, shd_env, tmp_path)
        return jobs[0]["frames"]["generated"] if jobs else 0

    def extracting() -> bool:
        jobs = status_json(cfg, shd_env, tmp_path)
        return bool(jobs) and jobs[0]["state"] == "extracting" and jobs[0]["frames"]["extracted"] >= 1

    points = {
        "extracting": extracting,
        "first_create": lambda: standin.count_creates() >= 1,
        "image_running": lambda: any(p.status_at(time.time()) == "processing"
                                     for p in standin.predictions(model="stability-ai/sdxl")),
        "frame_generated": lambda: generated() >= 1,
        "stitching": lambda: job_state() == "stitching",
    }
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for(kill_at, points[kill_at], timeout=60, every=0.01)
        d.kill()
    if kill_at == "stitching":
        assert job_state() == "stitching"  # killed mid-stitch, not after
    make_config(base)  # the next start with the ordinary ffmpeg
    with Daemon(cfg, shd_env, tmp_path) as d2:
        d2.ready()
        (job,) = wait_for("the job done after restart", lambda: done_jobs(cfg, shd_env, tmp_path), timeout=90)
    assert job["state"] == "done", job
    out = Path(job["output"])
    assert abs(probe_duration(out) - probe_duration(src)) <= 1 / 30 + 0.01
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    assert_one_prediction_per_frame_and_stage(standin, frames=4)
    store = Store.open_readonly(db)
    assert all(f.state == "generated" for f in store.frames(job["id"]))


def test_sigterm_during_extraction_leaves_the_job_to_resume_not_failed(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config({"ffmpeg": {"path": slow_ffmpeg(tmp_path)}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=6.0)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for("extraction under way", lambda: (j := status_json(cfg, shd_env, tmp_path)) and
                 j[0]["state"] == "extracting" and j[0]["frames"]["extracted"] >= 1)
        rc, took = d.terminate()
        assert rc == 0 and took < 5.0
    (job,) = status_json(cfg, shd_env, tmp_path)
    assert job["state"] == "extracting" and job["error"] is None
    assert not (tmp_path / "state" / "failed").exists()
    make_config()
    with Daemon(cfg, shd_env, tmp_path) as d2:
        d2.ready()
        (job,) = wait_for("the job done", lambda: done_jobs(cfg, shd_env, tmp_path))
    assert job["state"] == "done" and job["frames"]["generated"] == 6
    assert_one_prediction_per_frame_and_stage(standin, frames=6)


def test_the_token_never_appears_in_logs_or_errors(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                                   make_config) -> None:
    secret = "r8_TOPSECRETtoken0123456789"
    standin.set_token(secret)
    env = dict(shd_env, REPLICATE_API_TOKEN=secret)
    cfg = make_config({"log": {"level": "debug"}})
    standin.inject("POST /v1/predictions", status=500, times=1)
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=1.0)
    with Daemon(cfg, env, tmp_path) as d:
        d.ready()
        wait_for("done", lambda: done_jobs(cfg, env, tmp_path))
        d.terminate()
    text = "\n".join(d.lines)
    assert "prediction_created" in text and "stage_failed_retrying" in text
    assert secret not in text
    r = run_shd("status", "--config", str(cfg), env=env, cwd=tmp_path)
    assert secret not in r.stdout + r.stderr


@pytest.mark.parametrize("fate", ["vanished", "expired"])
def test_a_recorded_prediction_that_vanished_or_expired_is_created_again_and_recorded(
        fate: str, tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Killed while an image prediction runs; before the restart the server forgets it (or its output expires,
    as Replicate's one-hour retention does): the restart creates it again, and the ledger says why."""
    standin.set_latency("stability-ai/sdxl", 0.05, 1.5)
    cfg = make_config({"replicate": {"create_wait": 1}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=1.0)
    db = tmp_path / "state" / "shd.db"

    def recorded_image() -> list:
        if not db.exists():
            return []
        return [p for p in Store.open_readonly(db).predictions() if p.stage == "image" and p.remote_id]

    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        (first,) = wait_for("the image prediction recorded", recorded_image)
        d.kill()
    if fate == "vanished":
        standin.forget(first.remote_id)
    else:
        wait_for("the prediction finished on the server", lambda: standin.prediction(first.remote_id).status
                 == "succeeded")
        assert standin.expire_outputs() >= 1
    standin.set_latency("stability-ai/sdxl", 0.05, 0.05)
    with Daemon(cfg, shd_env, tmp_path) as d2:
        d2.ready()
        (job,) = wait_for("the job done", lambda: done_jobs(cfg, shd_env, tmp_path))
    assert job["state"] == "done"
    attempts = [p for p in Store.open_readonly(db).predictions(job["id"]) if p.stage == "image"]
    assert [p.status for p in attempts] == ["lost", "succeeded"]
    assert ("no longer exists" if fate == "vanished" else "expired") in (attempts[0].error or "")
    assert attempts[1].attempt == 2 and attempts[1].remote_id != first.remote_id
    assert standin.count_creates("stability-ai/sdxl") == 2

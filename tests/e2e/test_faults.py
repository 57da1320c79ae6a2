"""Many frames in flight, injected faults, and the API's limits: the output stays exactly what a calm run at
concurrency 1 gives, and every extra creation is accounted for in the ledger."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from shd import app as app_mod
from shd import config
from shd.store import Store
from tests.conftest import run_shd, write_config
from tests.e2e.harness import Daemon, status_json, wait_for
from tests.standin import StandIn
from tests.videos import ffmpeg_exe, make_video

pytestmark = pytest.mark.slow


def decoded_md5(video: Path) -> str:
    """MD5 of every decoded frame: equal only if the two videos show the same pictures in the same order."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-map", "0:v", "-f", "md5", "-"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def painted(db: Path) -> list[str]:
    store = Store.open_readonly(db)
    (job,) = store.jobs()
    return [hashlib.sha256(Path(f.image_path).read_bytes()).hexdigest() for f in store.frames(job.id)]


def run_once(tmp: Path, standin: StandIn, env: dict[str, str], src: Path, concurrency: int) -> tuple[Path, Path]:
    tmp.mkdir()
    # inline_max_kb = 0: every frame is uploaded first, so the Files API's faults are part of the run.
    cfg = write_config(tmp / "shd.toml", {"replicate": {"concurrency": concurrency, "seed": 4242,
                                                          "max_attempts": 8, "inline_max_kb": 0},
                                          "pipeline": {"audio": "none"}})
    r = run_shd("process", str(src), "--config", str(cfg), env=env, cwd=tmp, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return Path(r.stdout.strip()), tmp / "state" / "shd.db"


def test_faults_under_concurrency_give_the_same_video_as_a_calm_serial_run(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str]) -> None:
    src = make_video(tmp_path / "clip.mp4", seconds=16.0, size=(64, 48), audio=False)
    calm_out, calm_db = run_once(tmp_path / "calm", standin, shd_env, src, concurrency=1)
    calm_creates = standin.count_creates()
    assert calm_creates == 32

    standin.inject("POST /v1/predictions", status=429, retry_after=1, probability=0.1)
    standin.inject("POST /v1/predictions", status=500, probability=0.05)
    standin.inject("POST /v1/predictions", kind="close_after", probability=0.05)
    standin.inject("GET /v1/predictions/*", status=503, probability=0.1)
    standin.inject("POST /v1/files", status=502, probability=0.05)
    standin.inject("GET /delivery/*", kind="close_before", probability=0.05)
    standin.fail_predictions("Prediction interrupted; please retry (code: PA)", probability=0.08)
    rough_out, rough_db = run_once(tmp_path / "rough", standin, shd_env, src, concurrency=8)

    assert painted(rough_db) == painted(calm_db)
    assert len(standin.requests_matching("POST", "/v1/files")) >= 32  # both runs uploaded every frame
    assert decoded_md5(rough_out) == decoded_md5(calm_out)

    # Every prediction the server created is in the ledger, or counted as a create whose answer was lost.
    store = Store.open_readonly(rough_db)
    (job,) = store.jobs()
    ledger = store.predictions(job.id)
    server_ids = {p.id for p in standin.predictions()[calm_creates:]}
    recorded = {p.remote_id for p in ledger if p.remote_id}
    lost_unmatched = [p for p in ledger if p.status == "lost" and not p.remote_id]
    assert recorded <= server_ids
    assert len(server_ids - recorded) <= len(lost_unmatched)
    assert len(ledger) > 32  # the faults did cost retries, and each one is a recorded attempt with its reason
    assert {p.reason for p in ledger if p.attempt > 1} - {"first"}
    assert sum(p.status == "succeeded" for p in ledger) == 32


def test_a_401_pauses_all_work_and_it_resumes_once_the_token_is_fixed(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("r8_wrong\n")
    env = {k: v for k, v in shd_env.items() if k != "REPLICATE_API_TOKEN"}
    cfg = make_config({"replicate": {"token_file": str(token_file), "auth_recheck": 0.3}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=3.0)
    with Daemon(cfg, env, tmp_path) as d:
        d.ready()
        paused = d.wait_log("paused_auth_failed")
        assert "401" in paused["reason"] and "token" in paused["hint"]
        d.wait_log("still_paused")
        (job,) = status_json(cfg, env, tmp_path)
        assert job["frames"]["failed"] == 0 and job["state"] in ("extracting", "running")
        assert standin.count_creates() == 0
        token_file.write_text(standin.token + "\n")
        d.wait_log("resumed_after_auth_fix")
        (job,) = wait_for("the job done", lambda: [j for j in status_json(cfg, env, tmp_path)
                                                   if j["state"] == "done"])
        assert job["frames"]["generated"] == 3
    assert "r8_wrong" not in "\n".join(d.lines)


def test_the_limiter_keeps_creations_under_the_set_rate(tmp_path: Path, standin: StandIn,
                                                         shd_env: dict[str, str], make_config) -> None:
    cfg = make_config({"replicate": {"concurrency": 16, "creations_per_minute": 240}})
    src = make_video(tmp_path / "clip.mp4", seconds=12.0, size=(64, 48), audio=False)
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    times = sorted(q.time for q in standin.requests_matching("POST", "/v1/predictions"))
    assert len(times) == 24
    # 240/min = 4/s after a burst of at most 10: no 3-second window holds more than 10 + 12 creations.
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i:] if u - t < 3.0)
        assert in_window <= 22
    assert times[-1] - times[0] >= (24 - 10) / 4 - 0.5


def test_a_job_stopped_by_a_disk_error_is_deferred_not_failed_and_finishes_later(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in shd_env.items():
        monkeypatch.setenv(k, v)
    cfg = config.load(write_config(tmp_path / "shd.toml"))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output folder should be")
    app = app_mod.build(cfg)
    try:
        src = make_video(tmp_path / "clip.mp4", seconds=2.0)
        job = app_mod.create_process_job(app.cfg, app.store, src, blocker / "out.mp4")
        job = app.runner.run_job(job.id)
        assert job.state == "stitching" and job.error is None
        assert "FileExistsError" in str(app.runner.deferred[job.id])  # mkdir of the output folder failed
        blocker.unlink()
        t0 = time.monotonic()
        job = app.runner.run_job(job.id)
        assert job.state == "done" and Path(job.output or "").is_file()
        assert time.monotonic() - t0 < 30
        assert standin.count_creates() == 4  # the retry paid for nothing again
    finally:
        app.close()


def test_a_refused_request_fails_only_its_frame_with_the_reason(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """A 422 from the API (the input will never be accepted) fails that frame with the server's words, at once,
    and the video is still made (the frame is held)."""
    standin.inject("POST /v1/predictions", status=422, calls=[3],
                   body={"title": "Input validation failed", "status": 422,
                         "detail": "- input.prompt: too long\n"})
    cfg = make_config({"replicate": {"concurrency": 1}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0)
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    (job,) = store.jobs()
    failed = store.frames(job.id, ("failed",))
    assert len(failed) == 1 and "422" in (failed[0].error or "") and "input.prompt: too long" in failed[0].error
    refused = [p for p in store.predictions(job.id) if p.status == "failed"]
    assert len(refused) == 1 and refused[0].remote_id is None  # nothing was created, nothing retried


def test_a_vanished_outbox_is_waited_for_not_made_again_elsewhere_and_never_fails_the_video(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox and the folder it was in are gone (an unmounted share): the finished video waits in the job
    folder with the reason said, the outbox is not made afresh on the root file system, and once the share is
    back the video is published without anything painted again."""
    for k, v in shd_env.items():
        monkeypatch.setenv(k, v)
    share = tmp_path / "share"
    cfg = config.load(write_config(tmp_path / "shd.toml", {"paths": {"outbox": str(share / "outbox")},
                                                           "pipeline": {"audio": "none"}}))
    app = app_mod.build(cfg)
    try:
        src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
        job = app.runner.run_job(app_mod.create_process_job(app.cfg, app.store, src, None).id)
        assert job.state == "stitching" and job.error is None
        why = str(app.runner.deferred[job.id])
        assert why.startswith(f"{share / 'outbox'}: the outbox is gone, and the folder it was in too")
        assert app.runner.deferred[job.id].exit_code == 4 and not share.exists()
        share.mkdir()  # the share is back (empty: its outbox is made again)
        job = app.runner.run_job(job.id)
        assert job.state == "done" and job.output == str(share / "outbox" / "clip.mp4")
        assert standin.count_creates() == 4
    finally:
        app.close()

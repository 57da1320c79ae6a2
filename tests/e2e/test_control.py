"""`shd cancel`, `shd retry` and fair sharing, against a running daemon."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shd.store import Store
from tests.conftest import REPO, run_shd
from tests.e2e.harness import Daemon, status_json, wait_for
from tests.e2e.test_process import close
from tests.standin import StandIn, color_for
from tests.videos import frame_rgb, make_video

pytestmark = pytest.mark.slow


def test_cancel_stops_the_job_and_cancels_its_predictions_on_the_server(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    standin.override("stuck", model="stability-ai/sdxl")
    cfg = make_config()
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=3.0)
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        db = tmp_path / "state" / "shd.db"
        wait_for("three image predictions recorded with their ids",
                 lambda: db.exists() and len([p for p in Store.open_readonly(db).predictions()
                                              if p.stage == "image" and p.remote_id]) == 3, timeout=30)
        (job,) = status_json(cfg, shd_env, tmp_path)
        r = run_shd("cancel", job["id"][:6], "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "3 remote prediction(s) canceled" in r.stdout, r.stdout
        wait_for("the server's predictions canceled",
                 lambda: all(p.status == "canceled" for p in standin.predictions(model="stability-ai/sdxl")))
        (job,) = status_json(cfg, shd_env, tmp_path)
        assert job["state"] == "canceled" and job["error"] == "canceled by the user"
        # Each is billed for the time it ran before the cancel: priced in the ledger.
        image = [p for p in Store.open_readonly(db).predictions() if p.stage == "image"]
        assert all(p.status == "canceled" and p.predict_time is not None and p.cost_usd is not None for p in image)
        again = run_shd("cancel", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert again.returncode == 2 and "already canceled" in again.stderr  # bad usage
        assert d.alive
        assert len(standin.predictions(model="stability-ai/sdxl")) == 3  # nothing new was paid for


def test_a_cancel_that_cannot_reach_replicate_says_so_and_is_finished_by_the_next_one(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """A prediction whose cancel never reached the server runs on there and is billed: the ledger keeps it live
    (never `canceled` at no cost), `shd cancel` says so with exit 6, and the same command again cancels it."""
    standin.override("stuck", model="stability-ai/sdxl")
    cfg = make_config({"pipeline": {"audio": "none"}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    db = tmp_path / "state" / "shd.db"
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for("two image predictions recorded with their ids",
                 lambda: db.exists() and len([p for p in Store.open_readonly(db).predictions()
                                              if p.stage == "image" and p.remote_id]) == 2, timeout=30)
        assert d.terminate()[0] == 0  # they stay recorded, running on the server
    (job,) = status_json(cfg, shd_env, tmp_path)
    away = dict(shd_env, REPLICATE_BASE_URL="https://127.0.0.1:1")  # nothing listens: connection refused
    r = run_shd("cancel", job["id"], "--config", str(cfg), env=away, cwd=tmp_path)
    assert r.returncode == 6, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"shd: job {job['id']} is canceled, but 2 prediction(s) could not be canceled on Replicate (network error")
    assert r.stderr.strip().endswith(f"they may run on and be billed: `shd cancel {job['id']}` again cancels them")
    image = [p for p in Store.open_readonly(db).predictions() if p.stage == "image"]
    assert all(p.status in ("starting", "processing") for p in image)  # as the server has them
    assert all(p.status in ("starting", "processing") for p in standin.predictions(model="stability-ai/sdxl"))
    r = run_shd("cancel", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"job {job['id']} canceled; 2 remote prediction(s) canceled"
    assert all(p.status == "canceled" for p in standin.predictions(model="stability-ai/sdxl"))
    image = [p for p in Store.open_readonly(db).predictions() if p.stage == "image"]
    assert all(p.status == "canceled" and p.cost_usd is not None for p in image)
    again = run_shd("cancel", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert again.returncode == 2 and "already canceled" in again.stderr


def test_retry_brings_a_failed_job_back_from_failed_and_finishes_it(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    nsfw = "NSFW content detected. Try running it again, or try a different prompt."
    rule = standin.fail_predictions(nsfw, model="stability-ai/sdxl", nth=[2])
    cfg = make_config({"pipeline": {"on_frame_failure": "fail"}, "replicate": {"model_retries": 0}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=2.0)
    failed_dir = tmp_path / "state" / "failed"
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for("the job moved to failed/", lambda: (failed_dir / "clip.mp4.error.txt").exists())
        (job,) = status_json(cfg, shd_env, tmp_path)
        assert job["state"] == "failed" and "could not be painted" in job["error"]
        detail = json.loads(run_shd("status", job["id"], "--json", "--config", str(cfg), env=shd_env,
                                    cwd=tmp_path).stdout)["jobs"][0]
        assert "NSFW" in detail["failed_frames"][0]["error"]
        standin.remove_rule(rule.id)
        r = run_shd("retry", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert not (failed_dir / "clip.mp4").exists() and not (failed_dir / "clip.mp4.error.txt").exists()
        wait_for("the retried job done", lambda: status_json(cfg, shd_env, tmp_path)[0]["state"] == "done")
        (job,) = status_json(cfg, shd_env, tmp_path)
        assert job["frames"]["generated"] == 2 and job["frames"]["failed"] == 0 and job["error"] is None
        assert (tmp_path / "outbox" / "clip.mp4").is_file()
    # Only the failed frame's image was paid for again.
    assert standin.count_creates("methexis-inc/img2prompt") == 2
    assert standin.count_creates("stability-ai/sdxl") == 3


def test_retry_on_a_running_job_repaints_its_failed_frame_while_the_job_runs(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """`shd retry` while a job runs: the engine is not holding the reset frame, and the job notices that at its
    next wake-up (not at a periodic re-read): the frame is painted while another still runs, and nothing is filled."""
    nsfw = "NSFW content detected. Try running it again, or try a different prompt."
    standin.fail_predictions(nsfw, model="stability-ai/sdxl", nth=[1])
    standin.override(model="stability-ai/sdxl", nth=[2], run_time=20.0)  # keeps the job running meanwhile
    cfg = make_config({"replicate": {"model_retries": 0}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=2.0)
    db = tmp_path / "state" / "shd.db"

    def frame_states() -> tuple[str, str, list[str]] | None:
        if not db.exists():
            return None
        store = Store.open_readonly(db)
        try:
            jobs = store.jobs()
            return (jobs[0].id, jobs[0].state, [f.state for f in store.frames(jobs[0].id)]) if jobs else None
        finally:
            store.close()

    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        job_id, _, _ = wait_for("one frame failed", lambda: (s := frame_states()) and "failed" in s[2] and s)
        standin.clear_faults()
        r = run_shd("retry", job_id, "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        _, state, states = wait_for("the retried frame painted", lambda: (s := frame_states()) and
                                    s[2].count("generated") == 1 and s, timeout=15)
        assert state == "running" and "failed" not in states  # the slow frame is still being painted
        wait_for("the job done", lambda: frame_states()[1] == "done")  # type: ignore[index]  # None only before the job
    store = Store.open_readonly(db)
    frames = store.frames(job_id)
    assert [f.state for f in frames] == ["generated", "generated"] and all(f.filled_with is None for f in frames)
    assert standin.count_creates("stability-ai/sdxl") == 3  # the failed frame's image was paid for once more


def test_a_short_video_is_not_starved_by_a_long_one(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                                    make_config) -> None:
    """Two jobs share a budget of 2 predictions: the short one, dropped after the long one, finishes first."""
    standin.set_latency("methexis-inc/img2prompt", 0.01, 0.15)
    standin.set_latency("stability-ai/sdxl", 0.01, 0.15)
    cfg = make_config({"replicate": {"concurrency": 2}, "watch": {"stable_seconds": 0.2}})
    staging = tmp_path / "staging"
    long_ = make_video(staging / "long.mp4", seconds=12.0, size=(64, 48))
    short = make_video(staging / "short.mp4", seconds=2.0, size=(64, 48))
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        os.makedirs(tmp_path / "inbox", exist_ok=True)
        os.rename(long_, tmp_path / "inbox" / "long.mp4")
        wait_for("the long job running", lambda: status_json(cfg, shd_env, tmp_path))
        os.rename(short, tmp_path / "inbox" / "short.mp4")
        wait_for("both done", lambda: all(j["state"] == "done" for j in status_json(cfg, shd_env, tmp_path))
                 and len(status_json(cfg, shd_env, tmp_path)) == 2, timeout=90)
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    by = {j.source_name: j for j in store.jobs()}
    assert by["short.mp4"].finished_at < by["long.mp4"].finished_at  # type: ignore[operator]  # both are done


def test_the_status_script_wraps_shd_status(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                            make_config) -> None:
    cfg = make_config()
    src = make_video(tmp_path / "clip.mp4", seconds=1.0)
    assert run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path).returncode == 0
    r = subprocess.run([str(REPO / "scripts" / "shd-status"), "--json", "--config", str(cfg)], env=shd_env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["jobs"][0]["state"] == "done"


def test_retry_on_a_done_job_paints_its_failed_frames_and_replaces_the_video_in_place(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """With the default `hold`, a job whose frame failed ends done. `shd retry` paints that frame again and the
    new video replaces the old one under the same name, once it is complete: whoever had the old one open reads
    it whole, and no `clip-2.mp4` appears."""
    nsfw = "NSFW content detected. Try running it again, or try a different prompt."
    rule = standin.fail_predictions(nsfw, model="stability-ai/sdxl", nth=[2])
    cfg = make_config({"replicate": {"model_retries": 0, "concurrency": 1}, "pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    first = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = Path(first.stdout.strip())
    db = tmp_path / "state" / "shd.db"
    (job,) = Store.open_readonly(db).jobs()
    # The second painting failed: frame 1's, or frame 0's should the scheduler paint frame 1 first.
    (bad,) = [f for f in Store.open_readonly(db).frames(job.id) if f.state == "failed"]
    (kept,) = [f for f in Store.open_readonly(db).frames(job.id) if f.state == "generated"]
    held = f"held frame {kept.idx}"
    assert bad.filled_with == held
    assert close(frame_rgb(out, t=bad.idx + 0.5), color_for(kept.prompt or "", kept.seed or 0))  # its slot
    old = out.read_bytes()
    published = [p.name for p in out.parent.iterdir()]  # the video and its sidecars
    csv = out.parent / "clip.prompts.csv"
    assert held in csv.read_text()
    standin.remove_rule(rule.id)
    with out.open("rb") as reader, Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        r = run_shd("retry", job.id, "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"job {job.id} is running; its failed frames start again; the daemon works on it now"
        wait_for("the job done again", lambda: status_json(cfg, shd_env, tmp_path)[0]["state"] == "done"
                 and status_json(cfg, shd_env, tmp_path)[0]["frames"]["generated"] == 2)
        assert reader.read() == old
    bad = Store.open_readonly(db).frames(job.id)[bad.idx]
    assert bad.state == "generated" and bad.filled_with is None
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(published)  # the same names: no clip-2.*
    assert out.read_bytes() != old and held not in csv.read_text()  # the sidecars replaced with it
    assert close(frame_rgb(out, t=bad.idx + 0.5), color_for(bad.prompt or "", bad.seed or 0))  # now painted itself
    assert standin.count_creates("stability-ai/sdxl") == 3 and standin.count_creates("methexis-inc/img2prompt") == 2


@pytest.mark.parametrize("finished", [True, False], ids=["finished-before-its-answer", "still-running"])
def test_cancel_while_a_create_is_in_flight_cancels_what_it_created_and_the_ledger_says_how_it_ended(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, finished: bool) -> None:
    """`shd cancel` while the picture's create is on its way: the prediction exists on the server, its answer has
    not come back. It is canceled at once, and the ledger ends as the server does, never `processing`: canceled,
    or succeeded (paid) when it had finished already (the real API then answers `processing`, and slowly here)."""
    standin.configure(sync_status="processing")
    if finished:
        standin.inject("POST /v1/predictions", kind="slow_body", delay=3.0, calls=[2])  # the answer comes slowly
    else:
        standin.set_latency("stability-ai/sdxl", 0.0, 30.0)  # the create waits its 2 s (Prefer: wait) for nothing
    cfg = make_config({"replicate": {"concurrency": 1, "create_wait": 2}, "pipeline": {"audio": "none"}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    db = tmp_path / "state" / "shd.db"
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        (created,) = wait_for("the picture created, its answer on its way",
                              lambda: standin.predictions(model="stability-ai/sdxl"))
        (job,) = status_json(cfg, shd_env, tmp_path)
        r = run_shd("cancel", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith(f"{0 if finished else 1} remote prediction(s) canceled")
        assert d.wait_log("prediction_canceled")["prediction_id"] == created.id  # the worker, as its answer came
        server = created.status_at(created.created + 3600)  # how it ends: nothing will change it any more
        assert server == ("succeeded" if finished else "canceled")
        image = [p for p in Store.open_readonly(db).predictions() if p.stage == "image"]
        assert [(p.remote_id, p.status) for p in image] == [(created.id, server)]
        assert image[0].predict_time is not None and image[0].cost_usd is not None  # billed for the time it ran
        assert d.alive

"""`shd process VIDEO` end to end: the real CLI, real ffmpeg, real SQLite, the real replicate client over HTTPS
to the stand-in server."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from shd.backends.base import clean_prompt
from shd.store import Store
from tests.conftest import run_shd
from tests.standin import StandIn, color_for, prompt_for
from tests.videos import (
    frame_rgb,
    has_audio,
    make_audio_only,
    make_truncated,
    make_video,
    probe_duration,
    video_size,
)

pytestmark = pytest.mark.slow


def close(a: tuple[int, int, int], b: tuple[int, int, int], tol: int = 14) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def test_a_video_is_painted_frame_by_frame_with_its_soundtrack(tmp_path: Path, standin: StandIn,
                                                              shd_env: dict[str, str], make_config) -> None:
    """Each frame's own prompt goes to its own image, the images appear in order for 1/fps s each, the output
    lasts as long as the source and keeps its audio; the store shows one paid prediction per frame and stage."""
    src = make_video(tmp_path / "clip.mp4", seconds=4.0, size=(160, 120))
    cfg = make_config()
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = Path(r.stdout.strip())
    assert out == tmp_path / "outbox" / "clip.mp4" and out.is_file()
    assert abs(probe_duration(out) - probe_duration(src)) <= 1 / 30 + 0.01
    assert has_audio(out)
    assert video_size(out) == (160, 120)

    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    (job,) = store.jobs()
    frames = store.frames(job.id)
    assert job.state == "done" and len(frames) == 4
    sdxl_inputs = {p.input["prompt"]: p for p in standin.predictions(model="stability-ai/sdxl")}
    for f in frames:
        assert f.state == "generated"
        expected_prompt = clean_prompt(prompt_for(Path(f.path).read_bytes()))
        assert f.prompt == expected_prompt
        assert f.seed is not None and sdxl_inputs[expected_prompt].input["seed"] == f.seed
        colour = color_for(expected_prompt, f.seed)
        seen = frame_rgb(out, t=f.idx + 0.5)
        assert close(seen, colour), (f.idx, seen, colour)
    # Exactly one paid prediction per frame and stage, all succeeded, and the server agrees.
    preds = store.predictions(job.id)
    assert sorted((p.frame_idx, p.stage) for p in preds) == sorted(
        (i, s) for i in range(4) for s in ("prompt", "image"))
    assert all(p.status == "succeeded" and p.remote_id for p in preds)
    assert standin.count_creates() == 8
    # Frames went up as named .png files, and the source is untouched.
    assert sorted(f.name for f in standin.files) == [f"{i:06d}.png" for i in range(4)]


def test_with_inline_max_kb_small_frames_go_inline_and_the_ledger_keeps_their_digest(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """replicate.inline_max_kb: no upload request; the model gets each frame as a data: URI, and the ledger
    records it as the SHA-256 of the frame's bytes, not the bytes."""
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    cfg = make_config({"replicate": {"inline_max_kb": 256}, "pipeline": {"audio": "none"}})
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert standin.files == [] and not standin.requests_matching("POST", "/v1/files")
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    (job,) = store.jobs()
    frames = store.frames(job.id)
    sent = {p.input["image"] for p in standin.predictions(model="methexis-inc/img2prompt")}
    assert sent == {"data:image/png;base64," + base64.b64encode(Path(f.path).read_bytes()).decode() for f in frames}
    recorded = {p.frame_idx: p.input["image"] for p in store.predictions(job.id) if p.stage == "prompt"}
    assert recorded == {f.idx: "data:image/png;sha256," + hashlib.sha256(Path(f.path).read_bytes()).hexdigest()
                        for f in frames}
    assert [f.prompt for f in frames] == [clean_prompt(prompt_for(Path(f.path).read_bytes())) for f in frames]


def test_output_flag_and_status_json_follow_the_contract(tmp_path: Path, standin: StandIn,
                                                        shd_env: dict[str, str], make_config) -> None:
    src = make_video(tmp_path / "in put.mp4", seconds=2.0, audio=False)
    cfg = make_config({"pipeline": {"audio": "none"}})
    target = tmp_path / "elsewhere" / "painted.mp4"
    r = run_shd("process", str(src), "--config", str(cfg), "--output", str(target), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(target) and target.is_file() and not has_audio(target)
    assert not list(target.parent.glob(".*"))  # no temp file left beside it

    s = run_shd("status", "--config", str(cfg), "--json", env=shd_env, cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    (job,) = json.loads(s.stdout)["jobs"]
    assert job["source"] == "in put.mp4" and job["state"] == "done" and job["output"] == str(target)
    assert job["frames"] == {"total": 2, "extracted": 2, "prompted": 2, "generated": 2, "failed": 0}
    assert job["error"] is None and set(job) >= {"id", "source", "state", "frames", "output", "error"}
    table = run_shd("status", "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert job["id"] in table.stdout and "done" in table.stdout


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = make_video(tmp / "good.mp4", seconds=2.0)
    text = tmp / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "missing": (tmp / "nope.mp4", "does not exist"),
        "empty": (empty, "empty"),
        "text": (text, ""),
        "truncated": (make_truncated(good, tmp / "cut.mp4"), ""),
        "audio only": (make_audio_only(tmp / "song.m4a"), "no video stream"),
    }


def test_bad_inputs_get_a_one_line_reason_a_failed_job_and_stay_untouched(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config()
    bad = _bad_inputs(tmp_path / "in")
    for name, (path, words) in bad.items():
        before = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        r = run_shd("process", str(path), "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 3, (name, r.returncode)  # "bad input video"
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("shd: ") and str(path) in last and words in last, (name, last)
        assert r.stdout == ""
        after = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        assert before == after, f"{name}: the source was changed"
    fifo = tmp_path / "in" / "fifo.mp4"  # reading it would wait for a writer for ever (a device: never end)
    os.mkfifo(fifo)
    r = run_shd("process", str(fifo), "--config", str(cfg), env=shd_env, cwd=tmp_path, timeout=60)
    assert r.returncode == 3 and r.stderr.strip().splitlines()[-1] == f"shd: {fifo}: is not a regular file"
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    jobs = store.jobs()
    assert len(jobs) == len(bad) + 1 and all(j.state == "failed" and j.error for j in jobs)
    assert standin.count_creates() == 0  # nothing was paid for


def test_a_missing_token_is_an_error_before_any_work(tmp_path: Path, shd_env: dict[str, str], make_config) -> None:
    env = {k: v for k, v in shd_env.items() if k != "REPLICATE_API_TOKEN"}
    src = make_video(tmp_path / "clip.mp4", seconds=1.0)
    r = run_shd("process", str(src), "--config", str(make_config()), env=env, cwd=tmp_path)
    assert r.returncode == 2 and "no Replicate API token" in r.stderr
    assert not (tmp_path / "state" / "shd.db").exists()


def test_a_bad_config_names_the_file_and_starts_nothing(tmp_path: Path, shd_env: dict[str, str],
                                                       make_config) -> None:
    cfg = make_config({"pipeline": {"fps": -1.0}})
    r = run_shd("process", "x.mp4", "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 2
    assert str(cfg) in r.stderr and "pipeline.fps" in r.stderr
    assert not (tmp_path / "state").exists()


def test_a_model_error_on_one_frame_is_recorded_and_the_frame_is_held(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """SDXL's NSFW refusal on frame 1 (every retry too): the frame fails with the reason, the previous painted
    frame holds its slot, and status says so."""
    src = make_video(tmp_path / "clip.mp4", seconds=3.0)
    # Work out frame 1's prompt from a dry extraction the same way shd will see it.
    cfg = make_config({"replicate": {"model_retries": 1}})
    first = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    prompt1 = store.frames(store.jobs()[0].id)[1].prompt
    shutil.rmtree(tmp_path / "outbox")
    nsfw = "NSFW content detected. Try running it again, or try a different prompt."
    standin.fail_predictions(nsfw, model="stability-ai/sdxl", prompt_contains=prompt1)
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = Path(r.stdout.strip())
    job = store.jobs()[-1]
    f0, f1, f2 = store.frames(job.id)
    assert f1.state == "failed" and "NSFW content detected" in (f1.error or "")
    assert f1.filled_with == "held frame 0"
    image_attempts = [p for p in store.predictions(job.id) if p.frame_idx == 1 and p.stage == "image"]
    assert len(image_attempts) == 2 and image_attempts[1].reason.startswith("new seed")
    assert image_attempts[0].input["seed"] != image_attempts[1].input["seed"]
    assert close(frame_rgb(out, t=1.5), frame_rgb(out, t=0.5))
    s = json.loads(run_shd("status", job.id, "--json", "--config", str(cfg), env=shd_env, cwd=tmp_path).stdout)
    detail = s["jobs"][0]
    assert detail["frames"]["failed"] == 1 and detail["filled"] == 1
    assert detail["failed_frames"][0]["frame"] == 1 and "NSFW" in detail["failed_frames"][0]["error"]

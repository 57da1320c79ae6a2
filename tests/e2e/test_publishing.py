"""Publishing into the outbox: names reserved atomically, only verified videos published, ffmpeg never outlives shd,
and `--output` never overwrites a file silently."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_shd
from tests.e2e.harness import (
    Daemon,
    kill_ffmpegs_mentioning,
    ffmpegs_mentioning,
    slow_ffmpeg,
    status_json,
    wait_for,
)
from tests.standin import StandIn
from tests.videos import ffmpeg_exe, make_video, probe_duration, video_size

pytestmark = pytest.mark.slow


def decodes_fully(video: Path) -> str:
    """ffmpeg's complaints while decoding every stream of `video` to the end ("" when it decodes cleanly)."""
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", str(video),
                        "-map", "0", "-c:s", "text", "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    return r.stderr.strip() or ("" if r.returncode == 0 else f"ffmpeg exited with {r.returncode}")


def finished(cfg: Path, env: dict[str, str], cwd: Path, n: int) -> list[dict]:
    jobs = status_json(cfg, env, cwd)
    return jobs if sum(j["state"] in ("done", "failed", "canceled") for j in jobs) >= n else []


def test_same_stem_videos_finishing_together_each_get_their_own_output(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Six videos named c.* stitch at the same time (a slow ffmpeg makes the stitches overlap): each job is
    recorded with an output of its own, every one of them exists, and each is that job's video."""
    names = ["c.mp4", "c.mov", "c.mkv", "c.avi", "c.webm", "c.m4v"]
    sizes = {name: (64 + 2 * i, 48) for i, name in enumerate(names)}  # tells the outputs apart
    staging = tmp_path / "staging"
    for name, size in sizes.items():
        make_video(staging / name, seconds=2.0, size=size, audio=False)
    cfg = make_config({"pipeline": {"max_jobs": 6, "audio": "none"}, "replicate": {"concurrency": 12},
                       "ffmpeg": {"path": slow_ffmpeg(tmp_path)}})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        for name in names:
            (staging / name).rename(inbox / name)
        jobs = wait_for("six jobs finished", lambda: finished(cfg, shd_env, tmp_path, 6), timeout=120)
    assert all(j["state"] == "done" for j in jobs), jobs
    outputs = {j["source"]: Path(j["output"]) for j in jobs}
    assert len(set(outputs.values())) == 6, outputs
    sidecars = (".prompts.csv", ".srt", ".vtt", ".sheet.png")  # each video with its own, under its stem
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == sorted(
        out.with_suffix(s).name for out in outputs.values() for s in (".mp4", *sidecars))
    for name, out in outputs.items():
        assert out.parent == tmp_path / "outbox" and out.name.startswith("c") and out.suffix == ".mp4"
        assert video_size(out) == sizes[name], name
    assert "c.mp4" in {p.name for p in outputs.values()}


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_a_stop_during_stitching_then_a_restart_publishes_a_video_that_decodes_fully(
        stop: str, tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Stopped while a slow ffmpeg stitches: no ffmpeg of the first daemon outlives the restart, and the video the
    restart publishes decodes to the end with the source's duration."""
    base = {"replicate": {"create_wait": 1}}
    cfg = make_config({**base, "ffmpeg": {"path": slow_ffmpeg(tmp_path, readrate=0.5)}})
    src = make_video(tmp_path / "inbox" / "clip.mp4", seconds=4.0)
    duration = probe_duration(src)
    marker = str(tmp_path)
    try:
        with Daemon(cfg, shd_env, tmp_path) as d:
            d.ready()
            wait_for("the stitch under way", lambda: any(
                j["state"] == "stitching" for j in status_json(cfg, shd_env, tmp_path)) and any(
                "libx264" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                for pid in ffmpegs_mentioning(marker)), timeout=90, every=0.02)
            if stop == "SIGKILL":
                d.kill()
            else:
                rc, took = d.terminate()
                assert rc == 0 and took < 5.0
                assert not ffmpegs_mentioning(marker)  # stopped with shd, not left to run on
        (job,) = status_json(cfg, shd_env, tmp_path)
        assert job["state"] == "stitching" and job["output"] is None
        make_config(base)  # the restart stitches with the ordinary ffmpeg
        with Daemon(cfg, shd_env, tmp_path) as d2:
            d2.ready()
            (job,) = wait_for("the job done after the restart", lambda: finished(cfg, shd_env, tmp_path, 1))
            assert job["state"] == "done", job
            # Whatever the first daemon started is gone now (found and stopped at the restart).
            wait_for("no ffmpeg of the first daemon left", lambda: not ffmpegs_mentioning(marker), timeout=10)
        out = Path(job["output"])
        assert decodes_fully(out) == ""
        assert abs(probe_duration(out) - duration) <= 1 / 30 + 0.01
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    finally:
        kill_ffmpegs_mentioning(marker)


def test_process_output_never_overwrites_an_existing_file_unless_asked(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, audio=False)
    cfg = make_config({"pipeline": {"audio": "none"}})
    target = tmp_path / "mine.mp4"
    target.write_bytes(b"my own precious file")
    r = run_shd("process", str(src), "--config", str(cfg), "--output", str(target), env=shd_env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"shd: {target}: already exists; choose another --output, or add --overwrite to replace it")
    assert target.read_bytes() == b"my own precious file"
    assert standin.count_creates() == 0  # refused before anything was paid for
    # --overwrite replaces files, never a folder (or a device: /dev/null as root) in the way, before paying.
    folder = tmp_path / "mine"
    folder.mkdir()
    r = run_shd("process", str(src), "--config", str(cfg), "--output", str(folder), "--overwrite", env=shd_env,
                cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"shd: {folder}: is a directory, not a file; --overwrite replaces files only: choose another --output")
    assert folder.is_dir() and standin.count_creates() == 0

    r = run_shd("process", str(src), "--config", str(cfg), "--output", str(target), "--overwrite", env=shd_env,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(target) and decodes_fully(target) == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_retried_job_is_finished_by_the_very_command_that_made_it_its_output_replaced_in_place(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """`shd retry` on a done job, then the same `shd process ... --output FILE` again: FILE is the job's own video,
    replaced in place once the frame is painted, not refused as another's; another video is still refused it."""
    nsfw = "NSFW content detected. Try running it again, or try a different prompt."
    rule = standin.fail_predictions(nsfw, model="stability-ai/sdxl", nth=[2])
    cfg = make_config({"replicate": {"model_retries": 0}, "pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    target = tmp_path / "mine.mp4"
    command = ("process", str(src), "--config", str(cfg), "--output", str(target))
    assert run_shd(*command, env=shd_env, cwd=tmp_path).returncode == 0
    (job,) = status_json(cfg, shd_env, tmp_path)
    assert job["state"] == "done" and job["frames"]["failed"] == 1
    standin.remove_rule(rule.id)
    assert run_shd("retry", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path).returncode == 0
    other = make_video(tmp_path / "other.mp4", seconds=1.0, size=(64, 48), audio=False)
    refused = run_shd("process", str(other), "--config", str(cfg), "--output", str(target), env=shd_env,
                      cwd=tmp_path)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    again = run_shd(*command, env=shd_env, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == str(target), again.stderr[-2000:]
    (job,) = [j for j in status_json(cfg, shd_env, tmp_path) if j["id"] == job["id"]]
    assert job["state"] == "done" and job["frames"]["generated"] == 2 and job["output"] == str(target)
    assert ",failed," not in (tmp_path / "mine.prompts.csv").read_text() and decodes_fully(target) == ""
    assert standin.count_creates() == 5  # 2 prompts, 2 paintings, the one painted again


def outbox_sets(outbox: Path) -> dict[str, list[str]]:
    """Stem -> the suffixes published under it."""
    sets: dict[str, list[str]] = {}
    for p in sorted(outbox.iterdir()):
        stem, _, rest = p.name.partition(".")
        sets.setdefault(stem, []).append("." + rest)
    return sets


ONE_SET = sorted([".mp4", ".prompts.csv", ".sheet.png", ".srt", ".vtt"])


@pytest.mark.parametrize("point", ["publish-partial", "publish-placed"])
def test_a_kill_while_the_set_is_published_then_a_restart_ends_with_exactly_one_complete_set(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, point: str) -> None:
    """SIGKILL once a sidecar has its outbox name and the video not (or once all have theirs, the job not yet
    recorded done): the same file again finishes the job with one complete set, the video with its own sidecars,
    nothing painted twice."""
    cfg = make_config({"pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    killed = run_shd("process", str(src), "--config", str(cfg), env=dict(shd_env, SHD_TEST_KILL_AT=point),
                     cwd=tmp_path)
    assert killed.returncode == -9
    left = outbox_sets(tmp_path / "outbox")
    assert left == ({"clip": [".prompts.csv"]} if point == "publish-partial" else {"clip": ONE_SET})
    again = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip() == str(tmp_path / "outbox" / "clip.mp4")
    assert outbox_sets(tmp_path / "outbox") == {"clip": ONE_SET}
    assert decodes_fully(tmp_path / "outbox" / "clip.mp4") == ""
    assert len((tmp_path / "outbox" / "clip.prompts.csv").read_text().splitlines()) == 3  # its two frames
    assert standin.count_creates() == 4


def test_a_kill_after_the_job_is_recorded_done_then_retry_publishes_the_frames_painted_again(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """A job done with a failed frame is killed before it removes what it staged; `shd retry` paints the frame
    again: the set published in place is made of the frames as they are now, not the staged one from before."""
    nsfw = "NSFW content detected. Try running it again, or try a different prompt."
    rule = standin.fail_predictions(nsfw, model="stability-ai/sdxl", nth=[2])
    cfg = make_config({"replicate": {"model_retries": 0, "concurrency": 1}, "pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), audio=False)
    killed = run_shd("process", str(src), "--config", str(cfg), env=dict(shd_env, SHD_TEST_KILL_AT="done-recorded"),
                     cwd=tmp_path)
    assert killed.returncode == -9
    (job,) = status_json(cfg, shd_env, tmp_path)
    assert job["state"] == "done" and job["frames"]["failed"] == 1
    csv = tmp_path / "outbox" / "clip.prompts.csv"
    assert ",failed,held frame " in csv.read_text()  # which frame failed depends on which was painted first
    standin.remove_rule(rule.id)
    assert run_shd("retry", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path).returncode == 0
    again = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    (job,) = status_json(cfg, shd_env, tmp_path)
    assert job["state"] == "done" and job["frames"]["generated"] == 2
    assert ",failed," not in csv.read_text() and "held frame" not in csv.read_text()
    assert outbox_sets(tmp_path / "outbox") == {"clip": ONE_SET}

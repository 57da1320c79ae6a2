"""FILM transitions end to end (`output.transition = "film"`): the real CLI and daemon, real ffmpeg and SQLite, the
replicate client over HTTPS to the stand-in, whose FILM answers are real clips of 2^k + 1 frames (blends, with the
shape and timing of the real model's)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from shd.store import Store
from tests.conftest import run_shd
from tests.e2e.harness import Daemon, status_json, wait_for
from tests.standin import FILM, IMG2PROMPT, SDXL, StandIn, color_for
from tests.videos import frame_rgb, has_audio, make_video, probe_duration

pytestmark = pytest.mark.slow

FILM_NAME = FILM.split(":")[0]


def _near(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b)) <= 12  # H.264's rounding of a flat colour


def _between(mid: tuple[int, int, int], a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """`mid` lies well between `a` and `b` on the channel where they differ most: neither end, a picture between."""
    ch = max(range(3), key=lambda c: abs(a[c] - b[c]))
    lo, hi = sorted((a[ch], b[ch]))
    return hi - lo > 40 and lo + (hi - lo) / 4 <= mid[ch] <= hi - (hi - lo) / 4


def _paintings(tmp_path: Path) -> list[tuple[int, int, int]]:
    """The colour the stand-in painted each frame of the only job (its prompt and seed decide it)."""
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    return [color_for(f.prompt or "", f.seed) for f in store.frames(store.jobs()[0].id)]


def _status(cfg: Path, env: dict[str, str], cwd: Path, *args: str) -> dict:
    r = run_shd("status", *args, "--json", "--config", str(cfg), env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout)["jobs"][0])


@pytest.mark.parametrize("k", [1, 2])
def test_a_video_through_film_keeps_the_sources_length_and_sound_with_each_painting_on_its_own_second(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, k: int) -> None:
    """Three seconds: three paintings, two pairs (frames x 2 + frames - 1 creations, nothing else). The video lasts
    as long as the source, with its sound; at each whole second it shows that second's painting, halfway between
    two seconds a picture between the two paintings, and the last painting is held to the end."""
    src = make_video(tmp_path / "clip.mp4", seconds=3.0, size=(64, 48))
    cfg = make_config({"output": {"transition": "film", "times_to_interpolate": k},
                       "replicate": {"seed": 3}})  # paintings of clearly different colours
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "shd: estimate: 3 frames, 8 predictions" in r.stderr
    assert (standin.count_creates(IMG2PROMPT), standin.count_creates(SDXL), standin.count_creates(FILM)) == (3, 3, 2)
    uploaded = {f.id: f.name for f in standin.files}
    sent = sorted([uploaded[p.input[f].rsplit("/", 1)[1]] for f in ("frame1", "frame2")]
                  for p in standin.predictions(model=FILM))
    assert sent == [["000000.png", "000001.png"], ["000001.png", "000002.png"]]  # named .png...
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    painted = [hashlib.sha256(Path(f.image_path or "").read_bytes()).hexdigest() for f in store.frames(
        store.jobs()[0].id)]
    assert sorted((p.input_sha256["frame1"], p.input_sha256["frame2"]) for p in standin.predictions(model=FILM)) == \
        sorted([(painted[0], painted[1]), (painted[1], painted[2])])  # ...and the paintings' very bytes
    assert {p.input["times_to_interpolate"] for p in standin.predictions(model=FILM)} == {k}

    out = Path(r.stdout.strip())
    assert abs(probe_duration(out) - probe_duration(src)) <= 1 / 30 + 0.01 and has_audio(out)
    paintings = _paintings(tmp_path)
    for i, colour in enumerate(paintings):
        assert _near(frame_rgb(out, float(i)), colour), (i, frame_rgb(out, float(i)), colour)
    for i in (0, 1):
        middle = frame_rgb(out, i + 0.5)
        assert _between(middle, paintings[i], paintings[i + 1]), (i, middle, paintings)
    assert _near(frame_rgb(out, 2.95), paintings[2])

    job = _status(cfg, shd_env, tmp_path)
    assert job["pairs"] == {"total": 2, "interpolated": 2, "failed": 0, "crossfaded": 0}
    assert job["cost"]["predictions"] == 8
    table = run_shd("status", "--config", str(cfg), env=shd_env, cwd=tmp_path).stdout.splitlines()
    head = next(i for i, line in enumerate(table) if line.startswith("ID "))
    assert table[head].split()[8] == "PAIRS" and table[head + 1].split()[8] == "2/2"
    est = run_shd("estimate", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path).stdout
    film = next(line for line in est.splitlines() if line.split()[0] == "film")
    assert f"{FILM_NAME} 2 x " in " ".join(film.split()) and "at $0.001400/s" in film
    assert "predict_time: median of 2 in the ledger" in film  # the pairs it paid for, at this k


def test_a_sigkill_during_the_film_stage_resumes_and_pays_no_pair_twice(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Killed while FILM interpolates (each pair takes 3 s): the restart polls the recorded predictions and creates
    only the pairs never sent; every pair, prompt and painting is paid once, and the video is whole."""
    standin.set_latency(FILM_NAME, 0.0, 1.0)  # per run: 3 s a pair at k = 2
    cfg = make_config({"output": {"transition": "film", "times_to_interpolate": 2},
                       "replicate": {"seed": 3, "create_wait": 1}})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=3.0, size=(64, 48))
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for("FILM interpolating", lambda: standin.predictions(model=FILM))
        d.kill()
    assert standin.count_creates(FILM) in (1, 2)
    standin.set_latency(FILM_NAME, 0.0, 0.01)
    with Daemon(cfg, shd_env, tmp_path) as d2:
        d2.ready()
        (job,) = wait_for("the job done", lambda: [j for j in status_json(cfg, shd_env, tmp_path)
                                                   if j["state"] in ("done", "failed")])
    assert job["state"] == "done", job
    assert (standin.count_creates(IMG2PROMPT), standin.count_creates(SDXL), standin.count_creates(FILM)) == (3, 3, 2)
    pairs = {(p.input_sha256["frame1"], p.input_sha256["frame2"]) for p in standin.predictions(model=FILM)}
    assert len(pairs) == 2  # the two pairs, each once
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    film = [p for p in store.predictions(job["id"]) if p.stage == "film"]
    assert sorted((p.frame_idx, p.status) for p in film) == [(0, "succeeded"), (1, "succeeded")]
    assert job["pairs"] == {"total": 2, "interpolated": 2, "failed": 0, "crossfaded": 0}
    out = Path(job["output"])
    assert abs(probe_duration(out) - 3.0) <= 1 / 30 + 0.01
    paintings = _paintings(tmp_path)
    assert all(_near(frame_rgb(out, float(i)), c) for i, c in enumerate(paintings))


def test_a_pair_that_fails_is_crossfaded_recorded_and_shown_in_status_and_shd_retry_interpolates_it(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """FILM fails one pair for good: its gap is a crossfade made locally (the paintings still on their seconds),
    status says which pair, why, and what filled it; the job is done, not failed. `shd retry` on the done job
    interpolates that pair again and the new video replaces the old one in place."""
    rule = standin.fail_predictions("RuntimeError: FILM could not align the frames", model=FILM_NAME, nth=[1])
    src = make_video(tmp_path / "clip.mp4", seconds=3.0, size=(64, 48), audio=False)
    cfg = make_config({"output": {"transition": "film", "times_to_interpolate": 2}, "replicate": {"seed": 3}})
    r = run_shd("process", str(src), "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert standin.count_creates(FILM) == 2  # a model error is not retried
    job = _status(cfg, shd_env, tmp_path, Store.open_readonly(tmp_path / "state" / "shd.db").jobs()[0].id)
    assert job["state"] == "done" and job["pairs"] == {"total": 2, "interpolated": 1, "failed": 1, "crossfaded": 1}
    (failed,) = job["failed_pairs"]
    assert failed["error"] == "model error: RuntimeError: FILM could not align the frames"
    assert failed["filled_with"] == "crossfade" and failed["state"] == "failed"
    gap = failed["pair"]
    table = run_shd("status", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path).stdout
    assert "pairs    1/2 interpolated, 1 failed, 1 crossfaded" in table
    assert f"  pair {gap}-{gap + 1}: model error: RuntimeError: FILM could not align the frames (filled: " \
           f"crossfade)" in table
    out, paintings = Path(job["output"]), _paintings(tmp_path)
    assert all(_near(frame_rgb(out, float(i)), c) for i, c in enumerate(paintings))
    assert _between(frame_rgb(out, gap + 0.5), paintings[gap], paintings[gap + 1])

    standin.remove_rule(rule.id)
    old = out.read_bytes()
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        r = run_shd("retry", job["id"], "--config", str(cfg), env=shd_env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        again = wait_for("the job done again", lambda: (j := _status(cfg, shd_env, tmp_path, job["id"]))
                         and j["state"] == "done" and j["pairs"]["interpolated"] == 2 and j)
    assert again["pairs"] == {"total": 2, "interpolated": 2, "failed": 0, "crossfaded": 0}
    assert again["failed_pairs"] == [] and again["output"] == str(out)
    assert standin.count_creates(FILM) == 3 and standin.count_creates(SDXL) == 3  # the failed pair, once more
    assert out.read_bytes() != old and all(_near(frame_rgb(out, float(i)), c) for i, c in enumerate(paintings))

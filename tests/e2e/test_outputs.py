"""What the artist takes home, end to end (`shd process`, the stand-in, real ffmpeg): the first version's SDXL inputs
at the source's shape, the sidecars beside every output (checked for content), the transitions, img2img."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from shd import png, pricing, sheet
from shd.backends.base import clean_prompt
from shd.sidecars import WORD_JOINER
from shd.store import Store
from tests.conftest import run_shd
from tests.e2e.harness import Daemon, status_json, wait_for
from tests.standin import StandIn, color_for, prompt_for
from tests.videos import (
    frame_rgb,
    has_audio,
    make_video,
    probe_duration,
    stream_descriptions,
    subtitle_texts,
    video_size,
)

pytestmark = pytest.mark.slow

# ../shared/docs/first-version.md, step 3: every input but the prompt and the seed, 4:3 as the 1965 clip was.
FIRST_VERSION = {"width": 1024, "height": 768, "refine": "expert_ensemble_refiner", "scheduler": "K_EULER",
                 "lora_scale": 0.6, "num_outputs": 1, "guidance_scale": 7.5, "apply_watermark": False,
                 "high_noise_frac": 0.8, "negative_prompt": "", "prompt_strength": 0.8, "num_inference_steps": 25}
CUE = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)\n(.*)\n")


def _cues(text: str) -> list[tuple[float, float, str]]:
    def secs(h: str, m: str, s: str, ms: str) -> float:
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    return [(secs(*m.groups()[0:4]), secs(*m.groups()[4:8]), m[9]) for m in CUE.finditer(text)]


def _process(tmp_path: Path, env: dict[str, str], cfg: Path, src: Path, *extra: str) -> Path:
    r = run_shd("process", str(src), "--config", str(cfg), *extra, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip())


def test_every_output_comes_with_its_prompts_subtitles_and_contact_sheet(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """The set is published under one free stem (a stranger's clip.vtt moves all of it to clip-2), and each file
    says what the store and the stand-in say: the prompts the model returned, in frame order, at the frames' times."""
    src = make_video(tmp_path / "clip.mp4", seconds=3.0)
    cfg = make_config()
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "clip.vtt").write_text("someone else's\n")
    out = _process(tmp_path, shd_env, cfg, src)
    assert out == outbox / "clip-2.mp4"
    names = {"clip-2.mp4", "clip-2.prompts.csv", "clip-2.srt", "clip-2.vtt", "clip-2.sheet.png"}
    assert {p.name for p in outbox.iterdir()} == names | {"clip.vtt"}
    assert (outbox / "clip.vtt").read_text() == "someone else's\n"

    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    (job,) = store.jobs()
    frames = store.frames(job.id)
    prompts = [clean_prompt(prompt_for(Path(f.path).read_bytes())) for f in frames]
    assert len(frames) == 3 and [f.prompt for f in frames] == prompts
    sent_seeds = {p.input["prompt"]: p.input["seed"] for p in standin.predictions(model="stability-ai/sdxl")}

    rows = list(csv.reader(io.StringIO((outbox / "clip-2.prompts.csv").read_text(encoding="utf-8"), newline="")))
    assert rows[0][:2] == ["filename", "prompt"] and rows[0][2:5] == ["time", "seed", "state"]
    assert [r[:5] for r in rows[1:]] == [
        [f"output_{f.idx + 1:04d}.png", prompts[f.idx], f"{f.ts:.3f}", str(sent_seeds[prompts[f.idx]]), "generated"]
        for f in frames]

    expected = [(0.0, 1.0, prompts[0]), (1.0, 2.0, prompts[1]), (2.0, 3.0, prompts[2])]
    assert _cues((outbox / "clip-2.srt").read_text(encoding="utf-8")) == expected
    vtt = (outbox / "clip-2.vtt").read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT\n\n") and _cues(vtt) == expected

    (track,) = stream_descriptions(out, "Subtitle")
    assert "mov_text" in track and re.search(r"name\s+: Prompts", track) and "(eng)" in track
    assert [t.replace(WORD_JOINER, "") for t in subtitle_texts(out)] == prompts
    assert has_audio(out) and abs(probe_duration(out) - 3.0) <= 1 / 30 + 0.01

    assert png.size((outbox / "clip-2.sheet.png").read_bytes()) == sheet.layout(3, 160 / 120).size

    s = run_shd("status", job.id, "--frames", "--json", "--config", str(cfg), env=shd_env, cwd=tmp_path)
    doc = json.loads(s.stdout)["jobs"][0]
    listed = doc["frame_list"]
    assert [(f["frame"], f["time"], f["state"], f["prompt"]) for f in listed] == [
        (i, float(i), "generated", p) for i, p in enumerate(prompts)]
    paid = {f.idx: sum(p.cost_usd or 0.0 for p in store.predictions(job.id) if p.frame_idx == f.idx)
            for f in frames}  # each frame's prompt and painting, as the ledger priced them
    assert all(paid.values()) and [f["cost_usd"] for f in listed] == [round(paid[i], 6) for i in range(3)]
    assert sum(f["cost_usd"] for f in listed) == pytest.approx(doc["cost"]["usd"], abs=1e-5)
    table = run_shd("status", job.id[:6], "--frames", "--config", str(cfg), env=shd_env, cwd=tmp_path).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["FRAME", "TIME", "STATE", "COST", "PROMPT"]
    assert [ln.split(None, 4) for ln in lines[1:]] == [[str(i), f"0:0{i}", "generated", pricing.usd(paid[i]), p]
                                                         for i, p in enumerate(prompts)]
    bad = run_shd("status", "--frames", "--config", str(cfg), env=shd_env, cwd=tmp_path)
    assert bad.returncode == 2 and "--frames lists one job's frames" in bad.stderr

    (tmp_path / "mine.srt").write_text("mine\n")  # where `--output mine.mp4` would put its subtitles
    refused = run_shd("process", str(src), "--config", str(cfg), "--output", str(tmp_path / "mine.mp4"),
                      env=shd_env, cwd=tmp_path)
    assert refused.returncode == 2 and f"{tmp_path / 'mine.srt'}: already exists" in refused.stderr
    assert not (tmp_path / "mine.mp4").exists() and (tmp_path / "mine.srt").read_text() == "mine\n"


@pytest.mark.parametrize("size, sar, painted, shown", [
    ((176, 144), (128, 117), (1024, 768), (192, 144)),   # 4:3 through non-square pixels: the first version's size
    ((192, 108), None, (1344, 768), (192, 108)),          # 16:9
])
def test_sdxl_gets_the_first_versions_inputs_at_the_sources_shape(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, size, sar, painted, shown) -> None:
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=size, sar=sar, audio=False)
    cfg = make_config({"replicate.image_input": None})  # the shipped defaults
    out = _process(tmp_path, shd_env, cfg, src)
    (sent,) = standin.predictions(model="stability-ai/sdxl")
    assert {k: v for k, v in sent.input.items() if k not in ("prompt", "seed")} == {
        **FIRST_VERSION, "width": painted[0], "height": painted[1]}
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    (frame,) = store.frames(store.jobs()[0].id)
    assert png.size(Path(frame.path).read_bytes()) == shown  # extracted at the shape it is shown
    assert png.size(Path(frame.image_path or "").read_bytes()) == painted
    assert video_size(out) == shown and "SAR 1:1" in stream_descriptions(out, "Video")[0]


def _far(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b)) > 12  # beyond H.264's rounding of a flat colour


def _between(mid: tuple[int, int, int], a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """`mid` lies well between `a` and `b` on the channel where they differ most (a blend, not either one)."""
    ch = max(range(3), key=lambda c: abs(a[c] - b[c]))
    lo, hi = sorted((a[ch], b[ch]))
    margin = (hi - lo) / 4
    return hi - lo > 40 and lo + margin <= mid[ch] <= hi - margin


@pytest.mark.parametrize("transition", ["crossfade", "motion"])
def test_a_transition_keeps_the_sources_length_and_sound_and_passes_between_the_paintings(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, transition: str) -> None:
    src = make_video(tmp_path / "clip.mp4", seconds=3.0, size=(64, 48))
    cfg = make_config({"output": {"transition": transition, "transition_seconds": 0.5},
                       "replicate": {"seed": 3}})  # paintings of clearly different colours
    out = _process(tmp_path, shd_env, cfg, src)
    assert abs(probe_duration(out) - probe_duration(src)) <= 1 / 30 + 0.01 and has_audio(out)
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    paintings = [color_for(f.prompt or "", f.seed) for f in store.frames(store.jobs()[0].id)]
    for i, colour in enumerate(paintings):  # each painting holds between its changes
        assert not _far(frame_rgb(out, i + 0.5), colour), i
    for i in (1, 2):  # in the middle of a change: neither the painting before it nor the one after
        middle = frame_rgb(out, float(i))
        assert _between(middle, paintings[i - 1], paintings[i]), (i, middle, paintings)


def test_subtitles_off_leaves_the_track_out_of_the_video_but_writes_the_files(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), audio=False)
    out = _process(tmp_path, shd_env, make_config({"output": {"subtitles": False}}), src)
    assert stream_descriptions(out, "Subtitle") == []
    assert len(_cues(out.with_suffix(".srt").read_text())) == 1 and out.with_suffix(".vtt").exists()


def test_img2img_paints_over_the_fitted_source_frame_and_resumes_without_uploading_again(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    """Killed while SDXL paints over the source frame: the restart polls the recorded prediction; neither the
    picture nor the prediction is sent twice."""
    standin.set_latency("stability-ai/sdxl", 0.05, 1.5)
    cfg = make_config({"replicate": {"image_from": "source", "create_wait": 1}, "replicate.image_input": None})
    make_video(tmp_path / "inbox" / "clip.mp4", seconds=1.0, size=(176, 144), sar=(128, 117))
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        wait_for("SDXL painting", lambda: standin.predictions(model="stability-ai/sdxl"))
        d.kill()
    standin.set_latency("stability-ai/sdxl", 0.05, 0.05)
    with Daemon(cfg, shd_env, tmp_path) as d2:
        d2.ready()
        (job,) = wait_for("the job done", lambda: [j for j in status_json(cfg, shd_env, tmp_path)
                                                   if j["state"] in ("done", "failed")])
    assert job["state"] == "done", job
    (sent,) = standin.predictions(model="stability-ai/sdxl")
    assert sent.input["prompt_strength"] == 0.8 and (sent.input["width"], sent.input["height"]) == (1024, 768)
    uploads = {f.name: f for f in standin.files}
    assert sorted(uploads) == ["000000-1024x768.png", "000000.png"]  # the frame for its prompt, the picture for SDXL
    assert png.size(uploads["000000-1024x768.png"].content) == (1024, 768)
    assert sent.input["image"].endswith(uploads["000000-1024x768.png"].id)
    store = Store.open_readonly(tmp_path / "state" / "shd.db")
    (pred,) = [p for p in store.predictions(job["id"]) if p.stage == "image"]
    assert pred.input["image"] == sent.input["image"] and pred.status == "succeeded"
    assert video_size(Path(job["output"])) == (192, 144)

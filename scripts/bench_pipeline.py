#!/usr/bin/env python3
"""Benchmark: the real pipeline against the stand-in Replicate server with set latencies.

    python3 scripts/bench_pipeline.py                 # 120 frames at concurrency 1, 8, 16, 32; faults; 600 frames
    python3 scripts/bench_pipeline.py --quick         # 40 frames, one run each (a smoke run)
    python3 scripts/bench_pipeline.py --levels 16 --repeat 5   # one level, five runs
    python3 scripts/bench_pipeline.py --storm         # concurrency 16 clean, then with 20% of creates refused (429)
    python3 scripts/bench_pipeline.py --film          # only the FILM row (output.transition = "film")

For each run it prints: wall time; the ideal wall time for that concurrency (frames x (prompt + image latency) /
concurrency, plus extraction and stitching measured alone); efficiency = ideal / wall; speed-up over concurrency 1;
peak RSS and CPU time of the process running shd (the stand-in runs in a process of its own, ffmpeg in children,
so neither is counted); predictions created per frame. A run with 20% of creates refused with a 429 shows what a
storm of them costs; a run with 5% 429s and 5% failed predictions shows that the output is the same video and how
many retries the ledger recorded. Frames are uploaded first (the default); one
run sends them inline instead (replicate.inline_max_kb = 256). One run paints with FILM transitions
(output.transition = "film", times_to_interpolate 4, FILM_RUN_S per in-between: a pair takes 15 x that): its ideal
adds the pairs' predictions to the frames' and the assembly alone (decoding every pair's clip and stitching the
pictures between) to the stitching.

Each run is a fresh child process (`--one`), so peak RSS is that run's own. Each figure is the median of three runs
(by CPU per frame; the range is printed below it), except concurrency 1, which takes three minutes and runs once.
The stand-in's rate limits are off and shd's creation limit is raised: with Replicate's documented 600
creations/minute, 120 frames (240 creations) cannot take less than 24 s whatever the concurrency, which would hide
the pipeline's own efficiency.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "daemon"), str(REPO)]

PROMPT_S, IMAGE_S = 0.5, 1.0
FILM_K, FILM_RUN_S = 4, 0.1            # FILM's times_to_interpolate, and the stand-in's seconds per in-between
FILM_S = (2 ** FILM_K - 1) * FILM_RUN_S  # a pair's prediction: 1.5 s


def control(url: str, action: str, **args: Any) -> Any:
    req = urllib.request.Request(f"{url}/__control/{action}", data=json.dumps(args).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:  # the stand-in's own CA is in SSL_CERT_FILE
        return json.loads(resp.read())


def start_standin(work: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.standin", "--workdir", str(work), "--no-rate-limit",
                             "--queue-delay", "0.0", "--run-time", f"methexis-inc/img2prompt={PROMPT_S}",
                             "--run-time", f"stability-ai/sdxl={IMAGE_S}",
                             "--run-time", f"google-research/frame-interpolation={FILM_RUN_S}"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info


# --- one run, in a child process --------------------------------------------------------------------------------
def one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job through the real pipeline in this process and measure it."""
    from shd import app as app_mod
    from shd import config, logs
    from shd.store import Store

    cfg = config.from_mapping({
        "paths": {"inbox": "inbox", "outbox": "outbox", "state_dir": "state"},
        "pipeline": {"audio": "none"},
        "replicate": {"concurrency": spec["concurrency"], "seed": 777, "creations_per_minute": 1_000_000,
                      "poll_interval": 0.1, "create_wait": 5, "max_attempts": 10, "backoff_base": 0.2,
                      "backoff_max": 2.0, "image_input": {"width": 256, "height": 256},
                      "inline_max_kb": spec.get("inline_max_kb", 0),
                      # the warm-up clip is the start of the measured one: every frame must be paid for
                      "reuse": "none"},
        "log": {"level": "warning"},
        **({"output": {"transition": "film", "times_to_interpolate": FILM_K}} if spec.get("film") else {}),
    }, Path(spec["workdir"]) / "shd.toml")
    logs.setup("warning", "json")
    app = app_mod.build(cfg)
    try:
        # Warm up with a job of `concurrency` frames: the HTTP stack's lazy imports and each worker thread's TLS
        # handshake are paid once per daemon, not per frame.
        warm = app_mod.create_process_job(app.cfg, app.store, Path(spec["warmup"]),
                                          Path(spec["workdir"]) / "warmup.mp4")
        assert app.runner.run_job(warm.id).state == "done"
        job = app_mod.create_process_job(app.cfg, app.store, Path(spec["video"]), None)
        url = os.environ["REPLICATE_BASE_URL"]
        if spec.get("faults") == "mixed":  # 5% 429 on create, 5% failed predictions ("please retry")
            control(url, "inject", route="POST /v1/predictions", kind="status", status=429, retry_after=1,
                    probability=0.05)
            control(url, "fail_predictions", error="Prediction interrupted; please retry (code: PA)",
                    probability=0.05)
        elif spec.get("faults") == "429s":  # a storm: one create in five turned away ("resets in ~1s")
            control(url, "inject", route="POST /v1/predictions", kind="status", status=429, retry_after=1,
                    probability=0.2)
        creates0 = control(url, "count_creates")["count"]
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        job = app.runner.run_job(job.id)
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        creates = control(url, "count_creates")["count"] - creates0
        if spec.get("faults"):
            control(url, "clear_faults")
        store: Store = app.store
        ledger = store.predictions(job.id)  # the warm-up job's predictions are not counted
        frames = len(store.frames(job.id))
        return {
            "state": job.state, "wall": wall, "cpu": cpu, "frames": frames,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "ledger": len(ledger),
            "by_status": {s: sum(p.status == s for p in ledger) for s in {p.status for p in ledger}},
            "retries": sum(1 for p in ledger if p.attempt > 1),
            "server_creates": creates,
            "user": ru1.ru_utime - ru0.ru_utime, "sys": ru1.ru_stime - ru0.ru_stime,
            "output": job.output,
        }
    finally:
        app.close()


def no_http(frames: int, concurrency: int, root: Path) -> float:
    """CPU ms per frame of shd's own work (store, scheduler, pipeline, ffmpeg handling), through the in-memory
    backend with the same model latencies: what shd costs beside the HTTP client."""
    from shd import app as app_mod
    from shd import config, logs
    from shd.backends import models
    from shd.backends.memory import MemoryRemote, MemoryService
    from tests.videos import make_video

    cfg = config.from_mapping({"pipeline": {"audio": "none"}, "log": {"level": "warning"},
                               "replicate": {"concurrency": concurrency, "seed": 1, "creations_per_minute": 1_000_000,
                                             "image_input": {"width": 64, "height": 64}, "reuse": "none"}},
                              root / "no-http" / "shd.toml")
    logs.setup("warning", "json")
    service = MemoryService(latency={config.IMG2PROMPT: (0.0, PROMPT_S), config.SDXL: (0.0, IMAGE_S)})
    app = app_mod.build(cfg, backend=models.backend(MemoryRemote(service), cfg.replicate))
    try:
        warm = make_video(root / "warm.mp4", seconds=2.0, size=(64, 48), rate=5, audio=False)
        warm_job = app_mod.create_process_job(app.cfg, app.store, warm, root / "warm-out.mp4")
        assert app.runner.run_job(warm_job.id).state == "done"
        video = make_video(root / "no-http.mp4", seconds=float(frames), size=(64, 48), rate=5, audio=False)
        job = app_mod.create_process_job(app.cfg, app.store, video, None)
        cpu0 = time.process_time()
        assert app.runner.run_job(job.id).state == "done"
        cpu = time.process_time() - cpu0
    finally:
        app.close()
    return 1000 * cpu / frames


def run_child(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], env=env, cwd=spec["workdir"],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"run failed: {out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --- the parts measured alone, for the ideal -------------------------------------------------------------------
def measure_media(video: Path, frames: int, work: Path) -> tuple[float, float]:
    from shd import media
    from tests.videos import make_png

    ffmpeg = media.find_ffmpeg()
    probe = media.probe(ffmpeg, video)
    ex = work / "extract-alone"
    ex.mkdir()
    t0 = time.monotonic()
    media.extract(ffmpeg, video, ex, 1.0, lambda i, p: None, timeout=600)
    extract_s = time.monotonic() - t0
    seq = work / "stitch-alone"
    seq.mkdir()
    one_png = make_png(work / "one.png", (90, 120, 200), (256, 256))
    for i in range(frames):
        os.link(one_png, seq / f"{i:06d}.png")
    t0 = time.monotonic()
    media.stitch(ffmpeg, seq, fps=1.0, duration=probe.duration, size=media.output_size(probe.width, probe.height),
                 out=work / "alone.mp4", audio_src=None, timeout=600)
    return extract_s, time.monotonic() - t0


def measure_film_assembly(video: Path, frames: int, work: Path) -> float:
    """Seconds to decode every pair's clip (FILM_K, 256 x 256, as the stand-in answers) and stitch the paintings
    with the pictures between them: what FILM adds to the stitching."""
    from shd import inbetweens, media
    from tests.videos import make_png

    ffmpeg = media.find_ffmpeg()
    probe = media.probe(ffmpeg, video)
    seq = work / "film-alone"
    seq.mkdir()
    paintings = [make_png(seq / f"{i:06d}.png", (90 + i % 2 * 100, 120, 200), (256, 256)) for i in range(frames)]
    clip = work / "clip.mp4"
    clip.write_bytes(inbetweens.blend_clip(ffmpeg, paintings[0], paintings[1], times=FILM_K, size=(256, 256),
                                           work=work / "clip-work"))
    t0 = time.monotonic()
    between = [inbetweens.between(ffmpeg, clip, work / "between" / f"{i:06d}", timeout=600) for i in range(frames - 1)]
    media.stitch(ffmpeg, seq, fps=1.0, duration=probe.duration, size=media.output_size(probe.width, probe.height),
                 out=work / "film-alone.mp4", audio_src=None, timeout=600, transition="film", between=between)
    return time.monotonic() - t0


def decoded_md5(video: str) -> str:
    from tests.videos import ffmpeg_exe

    r = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", video, "-map", "0:v", "-f", "md5", "-"],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="40 frames, concurrency 1 and 16 only, no 600-frame run")
    ap.add_argument("--levels", help="comma-separated concurrency levels (default 1,8,16,32)")
    ap.add_argument("--frames", type=int, help="frames per run (default 120)")
    ap.add_argument("--repeat", type=int,
                    help="runs per figure (default 3; 1 with --quick and for concurrency 1); the run with the median "
                         "CPU per frame is reported, with the range")
    ap.add_argument("--inline-max-kb", type=int, default=0,
                    help="replicate.inline_max_kb for the concurrency levels (default 0: frames uploaded first)")
    ap.add_argument("--film", action="store_true",
                    help="only the FILM row: concurrency 16 with output.transition = \"film\"")
    ap.add_argument("--no-http", action="store_true",
                    help="only measure shd's own CPU per frame, through the in-memory backend (no HTTP requests)")
    ap.add_argument("--storm", action="store_true",
                    help="only the clean concurrency-16 run and the one with 20%% of creates refused with a 429")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return 0
    if args.no_http:
        with tempfile.TemporaryDirectory(prefix="shd-bench-") as tmp:
            n = args.frames or 120
            print(f"shd's own CPU, no HTTP, {n} frames at concurrency 16: {no_http(n, 16, Path(tmp)):.2f} ms/frame")
        return 0

    from tests.videos import make_video

    frames = args.frames or (40 if args.quick else 120)
    levels = [int(c) for c in args.levels.split(",")] if args.levels else [1, 16] if args.quick else [1, 8, 16, 32]
    if args.storm:
        levels = [16]
    root = Path(tempfile.mkdtemp(prefix="shd-bench-"))
    standin, info = start_standin(root / "standin")
    env = dict(os.environ, REPLICATE_BASE_URL=info["url"], SSL_CERT_FILE=info["cert"],
               REPLICATE_API_TOKEN=info["token"], PYTHONUNBUFFERED="1")
    os.environ.update(env)
    try:
        video = make_video(root / f"clip{frames}.mp4", seconds=float(frames), size=(64, 48), rate=5, audio=False)

        def warmup(c: int) -> str:
            clip = root / f"warmup{c}.mp4"
            if not clip.exists():
                make_video(clip, seconds=float(max(2, c)), size=(64, 48), rate=5, audio=False)
            return str(clip)
        extract_s, stitch_s = measure_media(video, frames, root)
        print(f"# {frames} frames; latencies {PROMPT_S}s prompt + {IMAGE_S}s image; "
              f"extraction alone {extract_s:.2f}s, stitching alone {stitch_s:.2f}s; {os.cpu_count()} CPUs")
        header = (f"{'run':<22}{'wall s':>8}{'ideal s':>9}{'effic.':>8}{'speed-up':>9}{'RSS MB':>8}"
                  f"{'pred/frame':>11}{'CPU ms/frame':>13}")
        print(header)
        base_wall = None
        results: dict[str, dict[str, Any]] = {}

        def report(name: str, c: int, r: dict[str, Any], n: int, film: bool = False) -> None:
            nonlocal base_wall
            if film:  # the pairs' predictions share the slots; their clips are decoded and stitched at the end
                ideal = (n * (PROMPT_S + IMAGE_S) + (n - 1) * FILM_S) / c + extract_s + film_s
            else:
                ideal = n * (PROMPT_S + IMAGE_S) / c + extract_s + stitch_s
            if c == 1 and base_wall is None:
                base_wall = r["wall"]
            speed = f"{base_wall / r['wall']:.1f}x" if base_wall else "-"
            created = r["server_creates"]
            print(f"{name:<22}{r['wall']:>8.2f}{ideal:>9.2f}{ideal / r['wall']:>8.2f}{speed:>9}"
                  f"{r['peak_rss_mb']:>8.0f}{created / n:>11.2f}{1000 * r['cpu'] / n:>13.2f}"
                  f"  ({1000 * r['user'] / n:.1f} user + {1000 * r['sys'] / n:.1f} sys)", flush=True)

        def measure(name: str, c: int, clip: Path, n: int, times: int, **extra: Any) -> dict[str, Any]:
            """Run `times` times; report the run with the median CPU per frame, and the spread."""
            runs = []
            for i in range(times):
                work = root / f"{name.replace(' ', '_').replace(',', '').replace('%', '')}-{i}"
                work.mkdir()
                r = run_child({"workdir": str(work), "video": str(clip), "warmup": warmup(c), "concurrency": c,
                               **extra}, env)
                assert r["state"] == "done" and r["frames"] == n, r
                runs.append(r)
            runs.sort(key=lambda r: r["cpu"])
            median = runs[len(runs) // 2]
            report(name, c, median, n, film=bool(extra.get("film")))
            if times > 1:
                print(f"  {times} runs: CPU ms/frame {1000 * runs[0]['cpu'] / n:.2f} to "
                      f"{1000 * runs[-1]['cpu'] / n:.2f}, wall {min(r['wall'] for r in runs):.2f} to "
                      f"{max(r['wall'] for r in runs):.2f} s", flush=True)
            return median

        # Each figure is the median of `repeat` runs (this machine is shared and CPU time moves by 20% from one
        # run to the next); concurrency 1 takes three minutes a run, so it runs once unless --repeat says more.
        repeat = args.repeat or (1 if args.quick else 3)
        (root / "film-media").mkdir()
        film_s = measure_film_assembly(video, frames, root / "film-media")
        print(f"# FILM: k = {FILM_K}, {FILM_S:g} s a pair ({FILM_RUN_S}s per in-between); its assembly alone "
              f"{film_s:.2f}s", flush=True)

        def film_row() -> None:
            r = measure(f"c16, FILM k={FILM_K}", 16, video, frames, repeat, film=True)
            print(f"  FILM: server created {r['server_creates']} predictions = {frames} x 2 + {frames - 1} pairs; "
                  f"ledger {r['by_status']}", flush=True)

        if args.film:
            film_row()
            return 0
        for c in levels:
            times = (args.repeat or 1) if c == 1 else repeat
            results[f"c{c}"] = measure(f"concurrency {c}", c, video, frames, times,
                                       inline_max_kb=args.inline_max_kb)
        if args.levels and not args.storm:  # just the levels asked for
            return 0

        # A 429 storm: one create in five refused ("resets in ~1s"), at concurrency 16. shd waits as the server
        # says, once per refusal window, and its rate is back as soon as creates go through.
        r = measure("c16, 20% 429s", 16, video, frames, repeat, faults="429s")
        same = decoded_md5(r["output"]) == decoded_md5(results["c16"]["output"])
        print(f"  429 storm: same video as the clean c16 run: {same}; {r['wall'] / results['c16']['wall']:.1f}x its "
              f"wall time; {r['by_status'].get('refused', 0)} creates refused, none paid; server created "
              f"{r['server_creates']} predictions for {2 * frames} stages")
        if args.storm:
            return 0

        # Faults: 5% 429 on create, 5% failed predictions ("please retry"), at concurrency 16.
        r = measure("c16, 5% 429 + 5% fail", 16, video, frames, repeat, faults="mixed")
        creates = r["server_creates"]
        same = decoded_md5(r["output"]) == decoded_md5(results["c16"]["output"])
        print(f"  faults: same video as the clean c16 run: {same}; ledger {r['by_status']}; "
              f"server created {creates} predictions = {2 * frames} + {creates - 2 * frames} extra; "
              f"retries recorded in the ledger: {r['retries']} (429s refused before creating: "
              f"{r['by_status'].get('refused', 0)})")

        # With replicate.inline_max_kb set, frames up to that size go inside the create instead of being uploaded
        # first: one request less per frame.
        measure("c16, frames inline", 16, video, frames, repeat, inline_max_kb=256)

        # FILM transitions: a pair's prediction for every two consecutive paintings, through the same slots.
        film_row()

        if not args.quick:
            big = 600
            video600 = make_video(root / "clip600.mp4", seconds=float(big), size=(64, 48), rate=2, audio=False)
            (root / "m600").mkdir()
            extract_s, stitch_s = measure_media(video600, big, root / "m600")
            base_wall = None
            measure("600 frames, c32", 32, video600, big, repeat)
    finally:
        standin.send_signal(signal.SIGTERM)
        standin.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

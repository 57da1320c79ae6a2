"""Watching it happen, for real: a real `shd run` against the stand-in, its web page in Debian's headless chromium,
/metrics checked against the ledger, hooks delivered by the daemon, and `shd status --watch` on a terminal."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shd import pricing
from tests.browser import Browser, find_chromium, pixels
from tests.conftest import run_shd
from tests.e2e.harness import Daemon, status_json, wait_for
from tests.standin import StandIn, decode_png
from tests.videos import ffmpeg_exe, make_video
from tests.webhooks import WebhookReceiver

pytestmark = pytest.mark.slow

@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed now if it is missing and this can be done; skipped with the reason where it
    cannot, except in CI, where a missing browser fails."""
    exe, why = find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return exe


def drop(tmp_path: Path, name: str, seconds: float = 3.0) -> None:
    """Make a video beside the inbox and move it in at once, as a finished copy arrives."""
    src = make_video(tmp_path / "staging" / name, seconds=seconds)
    (tmp_path / "inbox").mkdir(exist_ok=True)
    os.rename(src, tmp_path / "inbox" / name)


def finished(cfg: Path, env: dict[str, str], cwd: Path, n: int = 1) -> list[dict[str, Any]]:
    """Every job, once at least `n` of them are done or failed (else [], for wait_for)."""
    jobs = status_json(cfg, env, cwd)
    return jobs if len([j for j in jobs if j["state"] in ("done", "failed")]) >= n else []


def page_url(d: Daemon) -> str:
    return str(d.wait_log("web_listening")["url"])


# Where each part of a frame's row is on the page (the DOM's own layout boxes).
BOXES_JS = """(() => {
  const box = e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  return {
    header: box(document.querySelector('header')),
    video: box(document.getElementById('video')),
    rows: [...document.querySelectorAll('.frame')].map(row => ({
      frame: Number(row.dataset.frame),
      row: box(row), time: box(row.querySelector('.time')),
      source: box(row.querySelector('a.source img')),
      painted: box(row.querySelector('a.painted img, div.painted')), image: !!row.querySelector('a.painted img'),
      prompt: box(row.querySelector('.prompt')), text: row.querySelector('.prompt').textContent,
      error: (row.querySelector('.error') || {}).textContent || null})),
    viewport: {w: innerWidth, h: innerHeight}};
})()"""


def test_a_dropped_video_and_its_paintings_appear_on_the_page_without_a_reload(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, chromium: str) -> None:
    """The overview shows the job once the video is dropped; its page shows each frame's source and prompt, then
    each painting as it arrives (the stand-in holds the paintings until the page is open) or the reason it failed,
    then the video with its subtitles; the page never reloads. The screenshot shows every part where the DOM says it
    is, with the colours the stand-in painted."""
    stuck = standin.override("stuck", model="stability-ai/sdxl", times=3)
    cfg = make_config()  # the page on a free port of 127.0.0.1 (tests/conftest.py)
    with Daemon(cfg, shd_env, tmp_path) as d, Browser(chromium, width=1280, height=2000) as b:
        d.ready()
        url = page_url(d)
        b.goto(url)
        b.wait_js("document.getElementById('daemon').textContent.startsWith('running')", "the daemon's state")
        b.wait_js("!document.getElementById('no-active').hidden", "the empty overview")
        b.evaluate("window.shdMarker = 'still the same page'")
        drop(tmp_path, "clip.mp4")
        b.wait_js("[...document.querySelectorAll('#active a.job')].some(a => a.textContent === 'clip.mp4')",
                  "the job on the overview")
        assert b.evaluate("window.shdMarker") == "still the same page"
        assert "painted" in b.evaluate("document.querySelector('#active .progress .label').textContent")

        b.evaluate("document.querySelector('#active a.job').click()")
        b.wait_js("location.pathname.startsWith('/jobs/') && document.readyState === 'complete'", "the job page")
        b.evaluate("window.shdMarker = 'the job page, never reloaded'")
        wait_for("the three paintings held", lambda: len(standin.predictions(model="stability-ai/sdxl",
                                                                               status="starting")) == 3)
        b.wait_js("[...document.querySelectorAll('.frame .prompt')].filter(p => p.textContent).length === 3",
                  "three prompts")
        b.wait_js("[...document.querySelectorAll('a.source img')].every(i => i.complete && i.naturalWidth > 0)"
                  " && document.querySelectorAll('a.source img').length === 3", "three source thumbnails")
        assert b.evaluate("document.querySelectorAll('a.painted img').length") == 0
        assert b.evaluate("document.getElementById('result').hidden") is True

        standin.remove_rule(stuck.id)
        standin.fail_predictions(error="the model cannot paint this", model="stability-ai/sdxl", nth=[3])
        for p in standin.predictions(model="stability-ai/sdxl", status="starting"):
            standin.forget(p.id)  # shd finds them gone and paints again: two finish, one fails for good
        b.wait_js("document.querySelectorAll('a.painted img').length === 2 && "
                  "[...document.querySelectorAll('a.painted img')].every(i => i.complete && i.naturalWidth > 0)",
                  "two paintings")
        b.wait_js("[...document.querySelectorAll('.frame.failed .error')].some(e => "
                  "e.textContent.includes('the model cannot paint this') && e.textContent.includes('filled:'))",
                  "the failed frame with its reason and how its slot was filled")
        b.wait_js("!document.getElementById('result').hidden && document.getElementById('video').readyState >= 1",
                  "the playable video")
        # shd's own clip.vtt: one cue per painting shown; the failed frame's slot holds a neighbour's, so two cues
        b.wait_js("document.getElementById('video').textTracks.length === 1 && "
                  "(document.getElementById('video').textTracks[0].cues || []).length === 2", "its subtitles")
        assert b.evaluate("window.shdMarker") == "the job page, never reloaded"
        assert b.evaluate("document.getElementById('video').error") is None
        assert b.evaluate("document.getElementById('state').textContent") == "done"
        b.wait_js("[...document.images].every(i => i.complete)", "every picture decoded")
        shot = b.screenshot()
        layout = b.evaluate(BOXES_JS)
        job_id = b.evaluate("location.pathname.split('/')[2]")

        # Its cost as `shd status` writes it: a job of a few frames costs a fraction of a cent, not "$0.00"
        b.goto(url)
        b.wait_js(f"!!document.querySelector('#recent tr[data-job=\"{job_id}\"]')", "the job among the finished")
        cost = json.loads(run_shd("status", job_id, "--json", "--config", str(cfg), env=shd_env,
                                  cwd=tmp_path).stdout)["jobs"][0]["cost"]["usd"]
        shown = b.evaluate(f"document.querySelector('#recent tr[data-job=\"{job_id}\"]').children[4].textContent")
        assert 0 < cost < 0.005 and shown == pricing.usd(cost) != "$0.00", (cost, shown)
        spend = b.evaluate("document.getElementById('spend').textContent")
        assert spend.startswith(f"spent {pricing.usd(cost)} today"), spend

    db = sqlite3.connect(tmp_path / "state" / "shd.db")
    frames = {idx: (prompt, path, state) for idx, prompt, path, state in
              db.execute("SELECT idx, prompt, image_path, state FROM frames WHERE job_id = ?", (job_id,))}
    assert sorted(state for _, _, state in frames.values()) == ["failed", "generated", "generated"]
    width, height, rgb = pixels(shot, ffmpeg_exe())
    assert (width, height) == (1280, 2000)

    def at(x: float, y: float) -> tuple[int, ...]:
        i = (int(y) * width + int(x)) * 3
        return tuple(rgb[i:i + 3])

    colours = {at(x, y) for x in range(0, width, 16) for y in range(0, height, 16)}
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    rows = layout["rows"]
    assert [r["frame"] for r in rows] == [0, 1, 2]
    assert layout["header"]["y"] == 0
    assert layout["video"]["w"] > 300 and layout["video"]["y"] + layout["video"]["h"] <= rows[0]["row"]["y"]
    for r, nxt in zip(rows, rows[1:] + [None], strict=True):
        t, src, painted, prompt = r["time"], r["source"], r["painted"], r["prompt"]
        assert t["x"] + t["w"] <= src["x"] and src["x"] + src["w"] <= painted["x"]
        assert painted["x"] + painted["w"] <= prompt["x"], "the prompt right of the painting"
        assert src["w"] >= 200 and src["h"] >= 150 and painted["w"] >= 200 and painted["h"] >= 150
        assert r["row"]["y"] + r["row"]["h"] <= layout["viewport"]["h"], "the row is in the screenshot"
        if nxt is not None:
            assert r["row"]["y"] + r["row"]["h"] <= nxt["row"]["y"], "rows in frame order, one under the other"
        prompt_text, painted_path, state = frames[r["frame"]]
        assert r["text"] == prompt_text and prompt_text.startswith("a painting of")
        centre = at(painted["x"] + painted["w"] / 2, painted["y"] + painted["h"] / 2)
        if state == "failed":
            assert not r["image"] and "the model cannot paint this" in r["error"]
            assert centre != at(r["row"]["x"] + 2, r["row"]["y"] + r["row"]["h"] / 2), "the failed slot is drawn"
            continue
        assert r["image"] and r["error"] is None
        _, _, (painted_colour,) = decode_png(Path(painted_path).read_bytes())
        assert all(abs(a - b) <= 12 for a, b in zip(centre, painted_colour, strict=True)), (centre, painted_colour)
        source_pixels = {at(src["x"] + src["w"] * fx, src["y"] + src["h"] * fy)
                         for fx in (0.1, 0.3, 0.5, 0.7, 0.9) for fy in (0.2, 0.5, 0.8)}
        assert len(source_pixels) >= 5, "the source frame's test pattern is drawn"


def test_cancel_and_retry_from_the_page(tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config,
                                       chromium: str) -> None:
    """With `web.actions = true` the overview's buttons work from the page itself (its POSTs pass the cross-site
    checks): cancel stops the job and cancels its prediction on Replicate; retry puts it back to work."""
    standin.override("stuck", model="stability-ai/sdxl")  # the painting never finishes: the job stays at work
    cfg = make_config({"web": {"listen": "127.0.0.1:0", "actions": True}})
    with Daemon(cfg, shd_env, tmp_path) as d, Browser(chromium) as b:
        d.ready()
        b.goto(page_url(d))
        drop(tmp_path, "clip.mp4", seconds=1.0)
        wait_for("the painting under way", lambda: standin.predictions(model="stability-ai/sdxl", status="starting"))
        b.wait_js("!!document.querySelector('#active button[data-action=cancel]')", "the cancel button")
        b.evaluate("document.querySelector('#active button[data-action=cancel]').click()")
        notice = b.wait_js("document.getElementById('notice').textContent", "the daemon's answer")
        assert notice.startswith("job ") and " canceled; " in notice
        (job,) = status_json(cfg, shd_env, tmp_path)
        assert job["state"] == "canceled"
        # canceled on Replicate too (by the action, or by the engine that saw the job canceled: whichever is first)
        wait_for("the prediction canceled on the server",
                 lambda: standin.predictions(model="stability-ai/sdxl", status="canceled"))
        assert len(standin.predictions(model="stability-ai/sdxl")) == 1
        b.wait_js("!!document.querySelector('#recent button[data-action=retry]')", "the retry button")
        b.evaluate("document.querySelector('#recent button[data-action=retry]').click()")
        b.wait_js("document.getElementById('notice').textContent.includes('failed frames start again')",
                  "the retry's answer")
        wait_for("the job at work again", lambda: status_json(cfg, shd_env, tmp_path)[0]["state"] in (
            "queued", "extracting", "running"))


# --- /metrics ------------------------------------------------------------------------------------------------------
def test_metrics_of_a_real_run_match_its_ledger(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                                 make_config) -> None:
    """A run with a failed prediction (retried with a new seed) and 429s turned away; then /metrics, parsed by
    prometheus_client, agrees with the ledger in the database, also after a restart. The page was asked to listen
    on every address: that is logged as the user's explicit choice."""
    standin.fail_predictions(error="NSFW content detected", model="stability-ai/sdxl", nth=[1])
    standin.inject("POST /v1/predictions", status=429, retry_after=0.1, calls=[2, 3])
    cfg = make_config({"web": {"listen": "0.0.0.0:0"}})

    def scrape(d: Daemon) -> dict[str, Any]:
        rec = d.wait_log("web_listening_beyond_loopback")
        port = rec["url"].rsplit(":", 1)[1].strip("/")
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            return {f.name: f for f in text_string_to_metric_families(r.read().decode())}

    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        warning = d.wait_log("web_listening_beyond_loopback")
        assert warning["level"] == "warning" and "explicit choice" in warning["detail"]
        drop(tmp_path, "clip.mp4", seconds=2.0)
        wait_for("the job done", lambda: finished(cfg, shd_env, tmp_path))
        first = scrape(d)
        d.terminate()
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        again = scrape(d)

    db = sqlite3.connect(tmp_path / "state" / "shd.db")
    for m in (first, again):
        got = {(s.labels["model"], s.labels["status"]): s.value for s in m["shd_predictions"].samples}
        expected: dict[tuple[str, str], int] = {}
        for model, status, n in db.execute("SELECT model, status, COUNT(*) FROM predictions GROUP BY 1, 2"):
            expected[(model.split(":")[0], status)] = expected.get((model.split(":")[0], status), 0) + n
        assert got == expected
        assert got[("stability-ai/sdxl", "failed")] == 1 and got[("stability-ai/sdxl", "succeeded")] == 2
        assert m["shd_throttled_creates"].samples[0].value == 2 == db.execute(
            "SELECT COUNT(*) FROM predictions WHERE status = 'refused'").fetchone()[0]
        (total,) = db.execute("SELECT SUM(predict_time) FROM predictions").fetchone()
        seconds = sum(s.value for s in m["shd_prediction_seconds"].samples if s.name.endswith("_sum"))
        assert seconds == pytest.approx(total)
        assert {s.labels["state"]: s.value for s in m["shd_frames"].samples}["generated"] == 2
        assert {s.labels["state"]: s.value for s in m["shd_jobs"].samples}["done"] == 1
        assert m["shd_up"].samples[0].value == 1 and m["shd_paused"].samples[0].value == 0
        assert m["shd_predictions_in_flight"].samples[0].value == 0 and m["shd_queue_length"].samples[0].value == 0
        (spent,) = db.execute("SELECT SUM(cost_usd) FROM predictions").fetchone()
        assert spent > 0 and m["shd_spend_usd"].samples[0].value == pytest.approx(spent, abs=1e-6)  # to a microdollar


def test_a_busy_port_leaves_the_daemon_working_without_its_page(tmp_path: Path, standin: StandIn,
                                                                 shd_env: dict[str, str], make_config) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as taken:
        cfg = make_config({"web": {"listen": f"127.0.0.1:{taken.server_address[1]}"}})
        with Daemon(cfg, shd_env, tmp_path) as d:
            d.ready()
            err = d.wait_log("web_not_started")
            assert "cannot listen on 127.0.0.1" in err["error"]
            drop(tmp_path, "clip.mp4", seconds=1.0)
            assert wait_for("the job done anyway", lambda: finished(cfg, shd_env, tmp_path))[0]["state"] == "done"


# --- hooks -----------------------------------------------------------------------------------------------------------
@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A webhook endpoint whose first answer is a 500: every test with it sees a retry."""
    w = WebhookReceiver(statuses=[500])
    yield w
    w.close()


def test_the_daemon_notifies_by_command_and_signed_webhook_and_a_hung_hook_delays_nothing(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config, webhook: WebhookReceiver) -> None:
    """The hook command hangs on its first run (until the test lets it go); meanwhile that job is done and a second
    video is processed to the end, and the webhook (failing once, then retried) has told of both. A bad video's
    failure arrives too. The command's environment has the facts and not the token."""
    gate = tmp_path / "gate"
    seen = tmp_path / "seen"
    hook = tmp_path / "hook.py"
    hook.write_text(f"""
import json, os, pathlib, time
seen = pathlib.Path({str(seen)!r})
with seen.open("a") as fh:
    fh.write(json.dumps(dict(os.environ)) + "\\n")
if len(seen.read_text().splitlines()) == 1:          # the first run hangs until the test opens the gate
    while not pathlib.Path({str(gate)!r}).exists():
        time.sleep(0.05)
""")
    (tmp_path / "secret").write_text("webhook-key\n")
    cfg = make_config({"hooks": {"command": f"{sys.executable} {hook}", "webhook": webhook.url,
                                 "secret_file": "secret", "timeout": 120, "retries": 3}})
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        drop(tmp_path, "first.mp4", seconds=1.0)
        wait_for("the first hook run started and hanging", lambda: seen.exists() and seen.read_text())
        drop(tmp_path, "second.mp4", seconds=1.0)
        (tmp_path / "inbox" / "broken.mp4").write_text("not a video\n")
        jobs = wait_for("all three jobs finished while the hook hangs",
                        lambda: finished(cfg, shd_env, tmp_path, 3))
        assert len(seen.read_text().splitlines()) == 1, "the hook command is still on its first run"
        by_name = {j["source"]: j for j in jobs}
        assert by_name["first.mp4"]["state"] == by_name["second.mp4"]["state"] == "done"
        assert by_name["broken.mp4"]["state"] == "failed"
        wait_for("three webhooks (one retried)", lambda: len({b["job_id"] for b in webhook.bodies()}) == 3)
        gate.touch()
        wait_for("the two other command runs", lambda: len(seen.read_text().splitlines()) == 3)

    bodies = {b["source"]: b for b in webhook.bodies()}
    deliveries = [headers["X-Shd-Delivery"] for headers, _ in webhook.requests]
    assert len(deliveries) == 4 and deliveries[0] == deliveries[1] and len(set(deliveries)) == 3  # one retried
    for headers, body in webhook.requests:
        expected = "sha256=" + hmac.new(b"webhook-key", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Shd-Signature-256"], expected)
    done = bodies["second.mp4"]
    assert (done["event"], done["state"], done["output"]) == ("job.done", "done", by_name["second.mp4"]["output"])
    assert done["frames"]["generated"] == 1 and done["reason"] is None and done["time"].endswith("Z")
    failed = bodies["broken.mp4"]
    assert failed["event"] == "job.failed" and "broken.mp4" in failed["reason"] and failed["output"] is None
    envs = [json.loads(line) for line in seen.read_text().splitlines()]
    assert sorted(e["SHD_SOURCE"] for e in envs) == ["broken.mp4", "first.mp4", "second.mp4"]
    for e in envs:
        assert "REPLICATE_API_TOKEN" not in e and not any(standin.token in v for v in e.values())
        facts = bodies[e["SHD_SOURCE"]]
        assert (e["SHD_EVENT"], e["SHD_JOB_ID"], e["SHD_JOB_STATE"], e["SHD_OUTPUT"], e["SHD_REASON"]) == (
            facts["event"], facts["job_id"], facts["state"], facts["output"] or "", facts["reason"] or "")


def test_a_token_pause_and_resume_are_notified(tmp_path: Path, standin: StandIn, shd_env: dict[str, str],
                                               make_config, webhook: WebhookReceiver) -> None:
    standin.set_token("a-new-token")  # the daemon's token is refused: it pauses
    cfg = make_config({"hooks": {"webhook": webhook.url, "retries": 3},
                       "replicate": {"auth_recheck": 0.5}})
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        drop(tmp_path, "clip.mp4", seconds=1.0)
        wait_for("daemon.paused", lambda: [b for b in webhook.bodies() if b["event"] == "daemon.paused"])
        standin.set_token(shd_env["REPLICATE_API_TOKEN"])
        wait_for("daemon.resumed", lambda: [b for b in webhook.bodies() if b["event"] == "daemon.resumed"])
        wait_for("job.done", lambda: [b for b in webhook.bodies() if b["event"] == "job.done"])
    events = [b["event"] for b in webhook.bodies()]
    assert events[-3:] == ["daemon.paused", "daemon.resumed", "job.done"]
    paused = next(b for b in webhook.bodies() if b["event"] == "daemon.paused")
    assert "401" in paused["reason"] and paused["job_id"] is None


# --- shd status --watch --------------------------------------------------------------------------------------------
def test_status_watch_redraws_on_a_terminal_and_ends_quietly_on_ctrl_c(
        tmp_path: Path, standin: StandIn, shd_env: dict[str, str], make_config) -> None:
    cfg = make_config()
    with Daemon(cfg, shd_env, tmp_path) as d:
        d.ready()
        drop(tmp_path, "clip.mp4", seconds=1.0)
        wait_for("the job done", lambda: finished(cfg, shd_env, tmp_path))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "shd", "status", "--watch", "--interval", "0.2", "--config",
                             str(cfg)], stdin=slave, stdout=slave, stderr=slave, env=shd_env, cwd=tmp_path,
                            start_new_session=True)
    os.close(slave)
    out = b""
    try:
        while out.count(b"\x1b[H") < 3:  # three redraws, each from the top-left corner
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, f"no redraw within 30 s: {out!r}"
            out += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(30) == 0
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with its last process
                break
            if not chunk:
                break
            out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = out.decode(errors="replace")
    assert "clip.mp4" in text and "done" in text and "Ctrl-C to stop" in text
    assert "Traceback" not in text and "interrupted" not in text
    assert text.rstrip().endswith("\x1b[?25h")  # the cursor is given back

    piped = subprocess.run([sys.executable, "-m", "shd", "status", "--watch", "--config", str(cfg)], env=shd_env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert piped.returncode == 0 and "clip.mp4" in piped.stdout and "\x1b[" not in piped.stdout
    assert "terminal" in piped.stderr

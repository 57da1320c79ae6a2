"""The web page's HTTP server on loopback, over a real store, real files and real ffmpeg thumbnails: every route,
escape attempts (`..`, encoded dots and slashes, symlinks out of a job folder, unknown ids, huge numbers), byte
ranges, thumbnails made once, the actions' cross-site protection, and /metrics checked against the ledger."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shd import config, jobs
from shd.config import Config
from shd.errors import ShdError
from shd.live import InboxFile, inbox_files
from shd.states import FrameState as F
from shd.states import JobState as J
from shd.states import Stage
from shd.store import Store
from shd.web.server import WebServer
from tests.standin import solid_png
from tests.videos import ffmpeg_exe, make_video

SECRET = b"top secret: outside every job folder\n"


@dataclass
class StoreView:
    """A DaemonView over a store alone (no engine: nothing in flight); `paused_reason` and `spend_doc` are set by
    the test. Its actions are the real `shd retry` / `shd cancel` (without a remote to cancel on)."""

    cfg: Config
    store: Store
    paused_reason: str | None = None
    spend_doc: dict[str, float] | None = None
    calls: list[str] = field(default_factory=list)

    def paused(self) -> str | None:
        return self.paused_reason

    def in_flight(self) -> int:
        return 0

    def queue_length(self) -> int:
        return 0

    def inbox(self) -> list[InboxFile]:
        return inbox_files(self.cfg.paths.inbox)

    def spend(self) -> Mapping[str, float] | None:
        return self.spend_doc

    def retry(self, job_id: str) -> str:
        self.calls.append(f"retry {job_id}")
        return f"job {jobs.retry(self.cfg, self.store, job_id).id} queued"

    def cancel(self, job_id: str) -> str:
        self.calls.append(f"cancel {job_id}")
        job, _ = jobs.cancel(self.store, None, job_id)
        return f"job {job.id} canceled"


@dataclass
class Site:
    url: str
    host: str
    port: int
    cfg: Config
    store: Store
    view: StoreView
    outside: Path

    def request(self, method: str, path: str, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        """One request with `path` sent exactly as given (http.client does not normalise it)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, headers)

    def json(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def job_dir(self, job_id: str) -> Path:
        return self.cfg.paths.jobs_dir / job_id


def _job(store: Store, cfg: Config, job_id: str, name: str) -> Path:
    work = cfg.paths.jobs_dir / job_id
    (work / "frames").mkdir(parents=True)
    (work / "generated").mkdir()
    store.create_job(job_id, source_name=name, origin_path=cfg.paths.inbox / name, source_path=work / name,
                     work_dir=work, mode="daemon", fps=1.0)
    return work


def _frame(store: Store, work: Path, job_id: str, idx: int, painted: tuple[int, int, int] | None,
           error: str | None = None) -> None:
    src = work / "frames" / f"{idx:06d}.png"
    src.write_bytes(solid_png((10 * idx, 100, 200), 64, 48))
    store.add_frame(job_id, idx, float(idx), src)
    store.transition_frame(job_id, idx, F.PROMPTING)
    store.transition_frame(job_id, idx, F.PROMPTED, prompt=f"a painting of frame {idx}")
    store.transition_frame(job_id, idx, F.GENERATING)
    if painted is not None:
        out = work / "generated" / f"{idx:06d}.png"
        out.write_bytes(solid_png(painted, 64, 48))
        store.transition_frame(job_id, idx, F.GENERATED, image_path=out)
    else:
        store.transition_frame(job_id, idx, F.FAILED, error=error)


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[Any]:
    """Build a state folder with a done job (`done1`: three frames, one failed; an output video and its .vtt), a
    running job (`run1`: one frame prompted) and a folder outside them holding a secret; serve it."""
    servers: list[WebServer] = []
    stores: list[Store] = []

    def make(**web: Any) -> Site:
        cfg = config.from_mapping({"paths": {"inbox": "inbox", "outbox": "outbox", "state_dir": "state"},
                                   "web": {"listen": "127.0.0.1:0", **web}}, tmp_path / "shd.toml")
        for d in (cfg.paths.inbox, cfg.paths.outbox):
            d.mkdir(parents=True)
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_bytes(SECRET)
        (outside / "secret.png").write_bytes(solid_png((1, 2, 3), 8, 8))
        store = Store.open(cfg.paths.database)
        stores.append(store)
        work = _job(store, cfg, "done1", "clip.mp4")
        _frame(store, work, "done1", 0, (200, 30, 40))
        _frame(store, work, "done1", 1, (30, 200, 40))
        _frame(store, work, "done1", 2, None, error="image failed after 5 attempts: NSFW content detected")
        store.update_job("done1", frames_total=3, duration=3.0)
        out = make_video(cfg.paths.outbox / "clip.mp4", seconds=1.0, size=(64, 48))
        out.with_suffix(".vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\na painting of frame 0\n")
        for state in (J.EXTRACTING, J.RUNNING, J.STITCHING):
            store.transition_job("done1", state)
        store.transition_job("done1", J.DONE, output=str(out))
        work = _job(store, cfg, "run1", "second.mov")
        src = work / "frames" / "000000.png"
        src.write_bytes(solid_png((5, 5, 5), 64, 48))
        store.add_frame("run1", 0, 0.0, src)
        store.transition_job("run1", J.EXTRACTING)
        view = StoreView(cfg, store)
        server = WebServer(cfg, view, ffmpeg_exe())
        url = server.start()
        servers.append(server)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        return Site(url, "127.0.0.1", port, cfg, store, view, outside)

    yield make
    for s in servers:
        s.stop()
    for st in stores:
        st.close()


@pytest.fixture
def site(make_site: Any) -> Site:
    return make_site()


def test_the_pages_and_their_json(site: Site) -> None:
    """The overview and job pages are the shipped HTML with their scripts; /api/status lists the job at work, the
    finished one with its frames, and the inbox; /api/jobs/<id> gives the job and every frame with its prompt,
    failure and picture URLs made of ids and numbers only."""
    (site.cfg.paths.inbox / "arriving.mp4").write_bytes(b"x" * 2048)
    (site.cfg.paths.inbox / ".hidden.mp4").write_bytes(b"x")
    status, headers, body = site.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="/static/overview.js"' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    status, _, body = site.get("/jobs/done1")
    assert status == 200 and b'src="/static/job.js"' in body
    for name in ("shd.css", "common.js", "overview.js", "job.js", "index.html", "job.html"):
        status, headers, body = site.get(f"/static/{name}")
        assert status == 200 and body, name
    overview = site.json("/api/status")
    assert overview["daemon"]["running"] is True and overview["daemon"]["paused"] is None
    assert [j["id"] for j in overview["jobs"]] == ["run1"]
    assert [(j["id"], j["state"]) for j in overview["recent"]] == [("done1", "done")]
    assert overview["recent"][0]["frames"] == {"total": 3, "extracted": 3, "prompted": 3, "generated": 2,
                                               "failed": 1}
    assert [f["name"] for f in overview["inbox"]] == ["arriving.mp4"] and overview["inbox"][0]["size"] == 2048
    assert "spend" not in overview and overview["actions"] is False
    site.view.paused_reason = "Replicate refused the token (401)"
    site.view.spend_doc = {"today_usd": 0.5, "month_usd": 2.0, "total_usd": 3.25}
    overview = site.json("/api/status")
    assert overview["daemon"]["paused"] == "Replicate refused the token (401)"
    assert overview["spend"]["total_usd"] == 3.25

    doc = site.json("/api/jobs/done1")
    assert doc["job"]["state"] == "done" and doc["video"] == "/jobs/done1/video"
    assert doc["subtitles"] == "/jobs/done1/subtitles.vtt"
    frames = {f["frame"]: f for f in doc["frames"]}
    assert frames[0]["prompt"] == "a painting of frame 0" and frames[0]["painted"] == "/jobs/done1/frames/0/painted"
    assert frames[0]["source"] == "/jobs/done1/frames/0/source"
    assert frames[2]["state"] == "failed" and frames[2]["painted"] is None
    assert "NSFW" in frames[2]["error"]
    assert not any("/" in str(v) and "jobs/" not in str(v) for f in doc["frames"] for v in f.values()
                   if isinstance(v, str) and v.startswith("/")), "only ids and numbers in URLs"
    running = site.json("/api/jobs/run1")
    assert running["video"] is None and running["subtitles"] is None
    assert [f["state"] for f in running["frames"]] == ["extracted"]


def test_pictures_video_and_subtitles_are_served_from_the_job_folder_and_the_outbox(site: Site) -> None:
    work = site.job_dir("done1")
    status, headers, body = site.get("/jobs/done1/frames/0/source")
    assert status == 200 and headers["content-type"] == "image/png"
    assert body == (work / "frames" / "000000.png").read_bytes()
    status, headers, body = site.get("/jobs/done1/frames/1/painted")
    assert status == 200 and body == (work / "generated" / "000001.png").read_bytes()
    status, headers, body = site.get("/jobs/done1/video")
    assert status == 200 and headers["content-type"] == "video/mp4"
    assert body == (site.cfg.paths.outbox / "clip.mp4").read_bytes()
    status, headers, body = site.get("/jobs/done1/subtitles.vtt")
    assert status == 200 and headers["content-type"].startswith("text/vtt") and body.startswith(b"WEBVTT")
    status, headers, body = site.request("HEAD", "/jobs/done1/video")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == (site.cfg.paths.outbox / "clip.mp4").stat().st_size
    # no painting for a failed frame, no video or subtitles for a job that is not done
    for path in ("/jobs/done1/frames/2/painted", "/jobs/run1/video", "/jobs/run1/subtitles.vtt",
                 "/jobs/run1/frames/0/painted"):
        assert site.get(path)[0] == 404, path
    (site.cfg.paths.outbox / "clip.vtt").unlink()
    assert site.get("/jobs/done1/subtitles.vtt")[0] == 404
    assert site.json("/api/jobs/done1")["subtitles"] is None


def test_the_video_is_served_in_byte_ranges_for_seeking(site: Site) -> None:
    data = (site.cfg.paths.outbox / "clip.mp4").read_bytes()
    status, headers, body = site.get("/jobs/done1/video", {"Range": "bytes=0-99"})
    assert status == 206 and body == data[:100]
    assert headers["content-range"] == f"bytes 0-99/{len(data)}" and headers["accept-ranges"] == "bytes"
    status, _, body = site.get("/jobs/done1/video", {"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, _, body = site.get("/jobs/done1/video", {"Range": "bytes=100-"})
    assert status == 206 and body == data[100:]
    status, headers, _ = site.get("/jobs/done1/video", {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
    status, headers, _ = site.get("/jobs/done1/video")
    assert site.get("/jobs/done1/video", {"If-None-Match": headers["etag"]})[0] == 304


def test_thumbnails_are_small_jpegs_made_once_beside_the_frames(site: Site) -> None:
    """The first request makes the thumbnail with ffmpeg in the job's thumbs/ folder; later requests serve that file
    as it is; a picture that changed (a retried frame repainted) gets a new one."""
    work = site.job_dir("done1")
    status, headers, body = site.get("/jobs/done1/frames/0/painted/thumb")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff"
    thumb = work / "thumbs" / "000000.painted.jpg"
    assert thumb.read_bytes() == body
    made = thumb.stat()
    assert site.get("/jobs/done1/frames/0/painted/thumb")[2] == body
    assert thumb.stat().st_ino == made.st_ino and thumb.stat().st_mtime_ns == made.st_mtime_ns  # not remade
    assert site.get("/jobs/done1/frames/0/source/thumb")[0] == 200
    assert sorted(p.name for p in (work / "thumbs").iterdir()) == ["000000.painted.jpg", "000000.source.jpg"]
    painted = work / "generated" / "000000.png"
    painted.write_bytes(solid_png((0, 0, 250), 640, 480))
    os.utime(painted, ns=(made.st_mtime_ns + 10**9, made.st_mtime_ns + 10**9))
    status, _, again = site.get("/jobs/done1/frames/0/painted/thumb")
    assert status == 200 and again != body
    width = int.from_bytes(again[again.index(b"\xff\xc0") + 7:again.index(b"\xff\xc0") + 9], "big")
    assert width == 320  # scaled down from 640


ESCAPES = [
    "/jobs/../../etc/passwd",
    "/jobs/done1/../../outside/secret.txt",
    "/jobs/done1/frames/0/../../../../../outside/secret.txt",
    "/jobs/%2e%2e/%2e%2e/outside/secret.txt",
    "/jobs/done1%2f..%2f..%2f..%2foutside%2fsecret.txt",
    "/jobs/done1/frames/0%2f..%2f..%2fshd.db/source",
    "/jobs/..%2f..%2fshd.db/video",
    "/static/..%2froutes.py",
    "/static/../routes.py",
    "/static/%2e%2e/server.py",
    "/static/server.py",
    "/static/shd.css%00.html",
    "//etc/passwd",
    "/jobs/done1/frames/0/source/..",
    "/jobs/done1/frames/0/source/thumb/..",
    "/jobs/nope/video",
    "/jobs/nope",
    "/api/jobs/nope",
    "/jobs/done1/frames/-1/source",
    "/jobs/done1/frames/7/source",
    "/jobs/done1/frames/999999999/source",
    "/jobs/done1/frames/99999999999999999999999999999999/source",
    "/jobs/done1/frames/1e3/source",
    "/jobs/done1/frames/0x1/source",
    "/jobs/done1/frames/0/secret",
    "/jobs/" + "a" * 65,
    "/state/shd.db",
    "/outbox/clip.mp4",
]


def test_nothing_outside_the_job_folders_and_the_outbox_can_be_reached(site: Site) -> None:
    """`..` plain and percent-encoded, encoded slashes, NUL bytes, unknown ids, negative, huge and non-decimal
    frame numbers, paths of real files: every one a 404 that gives nothing away."""
    for path in ESCAPES:
        status, _, body = site.get(path)
        assert status == 404, (path, status, body[:200])
        assert SECRET not in body and b"SQLite" not in body, path


def test_symlinks_out_of_a_job_folder_are_not_followed(site: Site) -> None:
    """A frame, a painting, the thumbs folder, the output or its subtitles replaced by a symlink pointing out of the
    job folder and the outbox: 404, and no thumbnail is ever written outside."""
    work = site.job_dir("done1")
    for rel in ("frames/000000.png", "generated/000001.png"):
        (work / rel).unlink()
        (work / rel).symlink_to(site.outside / "secret.png")
    for path in ("/jobs/done1/frames/0/source", "/jobs/done1/frames/0/source/thumb",
                 "/jobs/done1/frames/1/painted", "/jobs/done1/frames/1/painted/thumb"):
        status, _, body = site.get(path)
        assert status == 404 and body.startswith(b"no "), path
    (work / "thumbs").symlink_to(site.outside, target_is_directory=True)
    status, _, _ = site.get("/jobs/done1/frames/1/source/thumb")
    assert status == 404
    assert sorted(p.name for p in site.outside.iterdir()) == ["secret.png", "secret.txt"]  # nothing written there
    # a symlink inside the job folder to a file of the same folder is fine
    (work / "frames" / "000002.png").unlink()
    (work / "frames" / "000002.png").symlink_to(work / "frames" / "000001.png")
    assert site.get("/jobs/done1/frames/2/source")[0] == 200
    out = site.cfg.paths.outbox
    (out / "clip.mp4").unlink()
    (out / "clip.mp4").symlink_to(site.outside / "secret.txt")
    (out / "clip.vtt").unlink()
    (out / "clip.vtt").symlink_to(site.outside / "secret.txt")
    for path in ("/jobs/done1/video", "/jobs/done1/subtitles.vtt"):
        status, _, body = site.get(path)
        assert status == 404 and SECRET not in body, path
    doc = site.json("/api/jobs/done1")
    assert doc["video"] is None and doc["subtitles"] is None


def test_a_row_pointing_outside_its_job_folder_is_not_served(site: Site) -> None:
    """What may be served is decided by the config's folders, not by paths in the store."""
    conn = sqlite3.connect(site.cfg.paths.database)
    conn.execute("UPDATE frames SET path = ? WHERE job_id = 'done1' AND idx = 0",
                 (str(site.outside / "secret.png"),))
    conn.execute("UPDATE jobs SET work_dir = ? WHERE id = 'done1'", (str(site.outside),))
    conn.commit()
    conn.close()
    assert site.get("/jobs/done1/frames/0/source")[0] == 404
    assert site.get("/jobs/done1/frames/1/source")[0] == 200


def test_since_gives_only_the_frames_changed_after_an_earlier_answer(site: Site) -> None:
    conn = sqlite3.connect(site.cfg.paths.database)
    conn.execute("UPDATE frames SET updated_at = updated_at - 600")  # changed ten minutes ago
    conn.commit()
    conn.close()
    cursor = site.json("/api/jobs/run1")["cursor"]
    assert site.json(f"/api/jobs/run1?since={cursor}")["frames"] == []
    site.store.transition_frame("run1", 0, F.PROMPTING)
    changed = site.json(f"/api/jobs/run1?since={cursor}")["frames"]
    assert [(f["frame"], f["state"]) for f in changed] == [(0, "prompting")]
    site.store.set_filled("done1", {2: "held frame 1"})  # written at stitching, long after the frame failed
    filled = site.json(f"/api/jobs/done1?since={cursor}")["frames"]
    assert [(f["frame"], f["filled_with"]) for f in filled] == [(2, "held frame 1")]
    assert site.get("/api/jobs/run1?since=yesterday")[0] == 400


def test_actions_are_off_unless_configured(site: Site) -> None:
    status, _, body = site.request("POST", "/api/jobs/run1/cancel", {"X-Shd-Action": "1"})
    assert status == 403 and b"actions are off" in body
    assert site.store.job("run1").state == J.EXTRACTING and site.view.calls == []
    assert site.get("/api/jobs/run1/cancel")[0] == 405  # and never by GET
    assert site.request("POST", "/api/status")[0] == 405


def test_actions_are_posts_only_the_page_itself_can_send(make_site: Any) -> None:
    """Without the page's header (a cross-site form), from another origin, or marked cross-site by the browser: 403
    and nothing happens. From the page: the job is canceled or retried, and a refusal says why (409)."""
    site = make_site(actions=True)
    host = f"127.0.0.1:{site.port}"
    refused = [
        {},                                                                    # a plain cross-site form POST
        {"X-Shd-Action": "1", "Origin": "http://evil.example"},
        {"X-Shd-Action": "1", "Origin": "http://127.0.0.1:1"},
        {"X-Shd-Action": "1", "Sec-Fetch-Site": "cross-site"},
        {"X-Shd-Action": "1", "Sec-Fetch-Site": "same-site"},
        {"X-Shd-Action": "yes"},
        {"x-shd-action": "1", "origin": "http://evil.example"},                 # header names in any case
    ]
    for headers in refused:
        status, _, body = site.request("POST", "/api/jobs/run1/cancel", headers)
        assert status == 403, (headers, body)
    assert site.view.calls == [] and site.store.job("run1").state == J.EXTRACTING
    page = {"X-Shd-Action": "1", "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    status, _, body = site.request("POST", "/api/jobs/run1/cancel", page)
    assert status == 200 and json.loads(body) == {"ok": True, "message": "job run1 canceled"}
    assert site.store.job("run1").state == J.CANCELED
    status, _, body = site.request("POST", "/api/jobs/run1/cancel", page)
    assert status == 409 and "already canceled" in json.loads(body)["message"]
    status, _, body = site.request("POST", "/api/jobs/done1/retry", page)  # its failed frame is painted again
    assert status == 200 and site.store.job("done1").state == J.RUNNING
    status, _, body = site.request("POST", "/api/jobs/run1/retry", page)
    assert status == 200 and site.store.job("run1").state == J.QUEUED
    assert site.request("POST", "/api/jobs/nope/retry", page)[0] == 404
    assert site.json("/api/status")["actions"] is True


def test_on_loopback_the_page_answers_to_loopback_names_only(site: Site) -> None:
    """A DNS-rebound name (evil.example resolving to 127.0.0.1) cannot read the page."""
    assert site.get("/api/status", {"Host": f"evil.example:{site.port}"})[0] == 421
    assert site.get("/", {"Host": "attacker.localhost.example"})[0] == 421
    assert site.get("/", {"Host": f"127.0.0.1.evil.example:{site.port}"})[0] == 421
    assert site.get("/", {"Host": "127.attacker.example"})[0] == 421
    assert site.get("/", {"host": "evil.example"})[0] == 421  # header names in any case
    for host in (f"localhost:{site.port}", f"127.0.0.1:{site.port}", "[::1]:8787"):
        assert site.get("/api/status", {"Host": host})[0] == 200, host


def test_a_busy_port_is_a_clear_error(site: Site) -> None:
    cfg = config.replace(site.cfg, web=config.Web(listen=f"127.0.0.1:{site.port}"))
    with pytest.raises(ShdError, match=rf"web page: cannot listen on 127.0.0.1:{site.port}: .*in use"):
        WebServer(cfg, site.view, ffmpeg_exe()).start()


# --- /metrics ------------------------------------------------------------------------------------------------------
def _ledger(store: Store) -> None:
    """Predictions in every final status, two models with two versions of one, and 429s turned away (all on one
    frame: the counters do not look at frames)."""
    done = [("methexis-inc/img2prompt:v1", 1.5), ("methexis-inc/img2prompt:v2", 0.3),
            ("stability-ai/sdxl:v1", 12.0), ("stability-ai/sdxl:v1", 45.0)]
    for i, (model, seconds) in enumerate(done):
        p = store.begin_prediction("run1", 0, Stage.PROMPT, model=model, input={"n": i}, reason="first")
        store.update_prediction(p.id, status="succeeded", remote_id=f"r{i}", predict_time=seconds)
    for i, (status, error) in enumerate([("failed", "NSFW content detected"), ("canceled", "timed out; canceled"),
                                         ("lost", "create interrupted; not on the server"),
                                         ("refused", "rate limited (429): Request was throttled."),
                                         ("refused", "rate limited (429): Request was throttled."),
                                         ("refused", "Replicate refused the token (401)")]):
        p = store.begin_prediction("run1", 0, Stage.PROMPT, model="stability-ai/sdxl:v1", input={"f": i},
                                   reason="again")
        store.update_prediction(p.id, status=status, error=error, predict_time=2.0 if status == "failed" else None)
    store.begin_prediction("run1", 0, Stage.PROMPT, model="methexis-inc/img2prompt:v1", input={}, reason="first")


def _metrics(site: Site) -> dict[str, Any]:
    status, headers, body = site.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_metrics_counters_match_the_ledger(site: Site) -> None:
    """Every counter is the ledger's own numbers, read with SQL here, independently of shd's queries."""
    _ledger(site.store)
    m = _metrics(site)
    db = sqlite3.connect(site.cfg.paths.database)
    expected: dict[tuple[str, str], float] = {}
    for model, status, n in db.execute("SELECT model, status, COUNT(*) FROM predictions WHERE status NOT IN "
                                       "('creating', 'starting', 'processing') GROUP BY model, status"):
        key = (model.split(":")[0], status)
        expected[key] = expected.get(key, 0) + n
    got = _predictions_total(m)
    assert got == expected
    assert got[("stability-ai/sdxl", "succeeded")] == 2 and got[("methexis-inc/img2prompt", "succeeded")] == 2
    for model in ("methexis-inc/img2prompt", "stability-ai/sdxl"):
        count, total = db.execute("SELECT COUNT(predict_time), SUM(predict_time) FROM predictions"
                                  " WHERE model LIKE ?", (model + ":%",)).fetchone()
        samples = {(s.name, s.labels.get("le")): s.value for s in m["shd_prediction_seconds"].samples
                   if s.labels["model"] == model}
        assert samples[("shd_prediction_seconds_count", None)] == count
        assert samples[("shd_prediction_seconds_sum", None)] == pytest.approx(total)
        assert samples[("shd_prediction_seconds_bucket", "+Inf")] == count
        for le in ("0.5", "2.5", "30.0"):
            (n,) = db.execute("SELECT COUNT(*) FROM predictions WHERE model LIKE ? AND predict_time <= ?",
                              (model + ":%", float(le))).fetchone()
            assert samples[("shd_prediction_seconds_bucket", le)] == n
    (throttled,) = db.execute("SELECT COUNT(*) FROM predictions WHERE status = 'refused' AND error LIKE "
                              "'rate limited (429)%'").fetchone()
    assert throttled == 2 and m["shd_throttled_creates"].samples[0].value == throttled
    frames = {s.labels["state"]: s.value for s in m["shd_frames"].samples}
    for state, n in db.execute("SELECT state, COUNT(*) FROM frames GROUP BY state"):
        assert frames[state] == n
    assert frames["prompted"] == 0  # every known state is there, 0 included
    jobs_ = {s.labels["state"]: s.value for s in m["shd_jobs"].samples}
    assert jobs_["done"] == 1 and jobs_["extracting"] == 1 and jobs_["failed"] == 0
    assert m["shd_up"].samples[0].value == 1 and m["shd_paused"].samples[0].value == 0
    assert m["shd_predictions_in_flight"].samples[0].value == 0 and "shd_queue_length" in m
    assert "shd_spend_usd" not in m  # not computed yet: absent, not zero
    assert "process_resident_memory_bytes" in m
    labels = {k for f in m.values() for s in f.samples for k in s.labels}
    assert labels <= {"model", "status", "state", "le"}  # no job ids, no file names


def _predictions_total(m: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {(s.labels["model"], s.labels["status"]): s.value for s in m["shd_predictions"].samples
            if s.name == "shd_predictions_total"}


def test_the_predictions_counter_never_goes_down_as_a_prediction_ends(site: Site) -> None:
    """A live prediction is in flight, not yet counted: were it counted by its live status, that series would drop
    back as it ends, which Prometheus reads as a counter reset (rate() and increase() would count it again)."""
    _ledger(site.store)
    live = site.store.begin_prediction("run1", 0, Stage.PROMPT, model="stability-ai/sdxl:v1", input={}, reason="first")
    before = _predictions_total(_metrics(site))
    assert not {status for _, status in before} & {"creating", "starting", "processing"}
    for status in ("starting", "processing", "succeeded"):
        site.store.update_prediction(live.id, status=status, remote_id="r-live", predict_time=3.0)
        after = _predictions_total(_metrics(site))
        assert all(after.get(key, 0) >= n for key, n in before.items()), (status, before, after)
        before = after
    assert before[("stability-ai/sdxl", "succeeded")] == 3


def test_metrics_show_a_pause_and_spend_when_the_daemon_reports_them(site: Site) -> None:
    site.view.paused_reason = "Replicate refused the token (401)"
    site.view.spend_doc = {"today_usd": 0.25, "month_usd": 1.0, "total_usd": 4.5}
    m = _metrics(site)
    assert m["shd_paused"].samples[0].value == 1
    assert m["shd_spend_usd"].type == "counter" and m["shd_spend_usd"].samples[0].value == 4.5


def test_malformed_requests_are_answered_and_the_page_keeps_serving(site: Site, capfd: Any) -> None:
    import socket

    def raw(data: bytes) -> bytes:
        with socket.create_connection((site.host, site.port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: s.recv(65536), b""))

    assert b"400" in raw(b"GARBAGE\r\n\r\n")  # not even HTTP: an HTTP/0.9-style error page
    assert raw(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n").split(b" ")[1] == b"414"
    assert raw(b"POST /api/jobs/run1/cancel HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999\r\n\r\n"
               ).split(b" ")[1] == b"413"
    for length in (b"-5", b"abc"):
        assert raw(b"POST /api/jobs/run1/cancel HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + length
                   + b"\r\n\r\n").split(b" ")[1] == b"413"
    assert raw(b"DELETE /api/jobs/run1 HTTP/1.1\r\nHost: localhost\r\n\r\n").split(b" ")[1] == b"501"
    assert raw(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n").startswith(b"HTTP/1.1 200")  # cut short
    assert site.get("/api/status")[0] == 200
    assert "Traceback" not in capfd.readouterr().err

"""The stand-in driven by the unmodified ``replicate`` 1.0.7 client: API shapes, run(), files, auth, entry point."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from tests.standin import FILM, FLUX, IMG2PROMPT, SDXL, StandIn, color_for, decode_png, prompt_for, solid_png
from tests.videos import frames_rgb, make_png, probe_duration, video_size

SDXL_VID = SDXL.split(":")[1]
IMG2PROMPT_VID = IMG2PROMPT.split(":")[1]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def small(prompt: str = "a red fox", **extra: object) -> dict[str, object]:
    """A cheap SDXL input."""
    return {"prompt": prompt, "width": 32, "height": 16, "seed": 1, **extra}


def test_create_with_wait_get_cancel_and_shape(standin: StandIn, client: replicate.Client,
                                               raw: httpx.Client) -> None:
    """predictions.create(wait=N) comes back done; get/cancel (terminal: unchanged) keep the real JSON shape."""
    p = client.predictions.create(version=SDXL_VID, input=small(), wait=5)
    assert p.status == "succeeded" and re.fullmatch(r"[a-z0-9]{26}", p.id)
    assert p.model == "stability-ai/sdxl" and p.version == SDXL_VID
    assert p.output == [f"{standin.url}/delivery/{p.id}/out-0.png"]
    assert p.metrics and p.metrics["predict_time"] >= 0 and "total_time" in p.metrics
    post = standin.requests_matching("POST", "/v1/predictions")[0]
    assert post.headers["prefer"] == "wait=5" and json.loads(post.body) == {"input": small(), "version": SDXL_VID}
    assert post.headers["authorization"] == "Bearer r8_test"
    assert client.predictions.get(p.id).status == "succeeded"
    assert client.predictions.cancel(p.id).status == "succeeded"

    body = raw.get(f"/v1/predictions/{p.id}").json()
    for key in ("created_at", "started_at", "completed_at"):
        assert RFC3339.match(body[key]), body[key]
    assert body["urls"] == {"get": f"{standin.url}/v1/predictions/{p.id}",
                            "cancel": f"{standin.url}/v1/predictions/{p.id}/cancel",
                            "web": f"https://replicate.com/p/{p.id}"}
    assert body["data_removed"] is False and body["source"] == "api" and body["error"] is None
    assert body["input"] == small() and "Using seed: 1\n" in body["logs"] and "100%|" in body["logs"]

    resp = raw.post("/v1/predictions", json={"version": SDXL, "input": small()}, headers={"Prefer": "wait"})
    assert resp.status_code == 201 and resp.headers["preference-applied"] == "wait"
    assert resp.headers["content-type"] == "application/json" and "ratelimit-remaining" in resp.headers
    assert resp.headers["ratelimit-reset"] == "1"
    started = raw.post("/v1/predictions", json={"version": SDXL_VID, "input": small()}).json()
    assert started["status"] == "starting" and started["logs"] == "" and started["output"] is None
    assert "started_at" not in started and "metrics" not in started


def test_wait_timeout_then_cancel_running(standin: StandIn, client: replicate.Client, raw: httpx.Client) -> None:
    """A Prefer: wait that times out answers 'starting' + Location; cancel stops the running prediction."""
    standin.set_latency("stability-ai/sdxl", 0.0, 30.0)
    t0 = time.monotonic()
    resp = raw.post("/v1/predictions", json={"version": SDXL_VID, "input": small()}, headers={"Prefer": "wait=1"})
    assert 0.9 < time.monotonic() - t0 < 3
    body = resp.json()
    assert body["status"] == "starting" and body["output"] is None
    assert resp.headers["location"] == body["urls"]["get"] and resp.headers["preference-applied"] == "wait=1"
    assert client.predictions.get(body["id"]).status == "processing"
    canceled = client.predictions.cancel(body["id"])
    assert canceled.status == "canceled" and canceled.output is None and canceled.completed_at
    assert canceled.metrics and "predict_time" in canceled.metrics
    assert client.predictions.cancel(body["id"]).completed_at == canceled.completed_at
    assert standin.prediction(body["id"]).history()[-1][0] == "canceled"
    assert [s for s, _ in standin.prediction(body["id"]).history()] == ["starting", "processing", "canceled"]


def test_finished_predictions_report_predict_time_as_the_api_does_and_it_can_be_fixed_per_model(
        standin: StandIn, client: replicate.Client) -> None:
    """metrics.predict_time (what Replicate bills) comes with every finished prediction: the time it ran, or the
    figure set for its model with set_predict_time (succeeded and failed alike; a canceled one reports the time it
    really ran)."""
    standin.set_latency("stability-ai/sdxl", 0.0, 0.05)
    ran = client.predictions.create(version=SDXL_VID, input=small(), wait=5)
    assert ran.status == "succeeded" and ran.metrics and 0.04 <= ran.metrics["predict_time"] < 5
    standin.set_predict_time("stability-ai/sdxl", 7.25)
    fixed = client.predictions.create(version=SDXL_VID, input=small(), wait=5)
    assert fixed.metrics and fixed.metrics["predict_time"] == 7.25
    standin.fail_predictions("CUDA error", model="stability-ai/sdxl", times=1)
    failed = client.predictions.create(version=SDXL_VID, input=small("x"), wait=5)
    assert failed.status == "failed" and failed.metrics and failed.metrics["predict_time"] == 7.25
    standin.set_latency("stability-ai/sdxl", 0.0, 30.0)
    running = client.predictions.create(version=SDXL_VID, input=small("y"), wait=1)
    canceled = client.predictions.cancel(running.id)
    assert canceled.metrics and canceled.metrics["predict_time"] < 7.25
    standin.set_predict_time("stability-ai/sdxl", None)
    standin.set_latency("stability-ai/sdxl", 0.0, 0.05)
    again = client.predictions.create(version=SDXL_VID, input=small("z"), wait=5)
    assert again.metrics and again.metrics["predict_time"] != 7.25


def test_progress_logs_grow(standin: StandIn, client: replicate.Client) -> None:
    """While processing, logs grow with tqdm lines that Prediction.progress parses."""
    standin.set_latency("stability-ai/sdxl", 0.0, 0.6)
    p = client.predictions.create(version=SDXL_VID, input=small())
    seen = set()
    while p.status not in ("succeeded", "failed", "canceled"):
        p.reload()
        if p.status == "processing" and p.progress is not None:
            seen.add(p.progress.current)
    assert p.status == "succeeded" and p.progress is not None and p.progress.percentage == 1.0
    assert seen and min(seen) < 50


def test_run_sdxl_reads_png_outputs(standin: StandIn, client: replicate.Client) -> None:
    """run() returns FileOutput objects whose bytes are PNGs of the asked size and seeded colours."""
    out = client.run(SDXL, input=small("a cat", width=40, height=24, seed=11, num_outputs=2))
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(o, FileOutput) for o in out)
    for i, item in enumerate(out):
        assert decode_png(item.read()) == (40, 24, [color_for("a cat", 11 + i)])
    paths = [(r.method, r.path.removeprefix("/v1").split("/")[1]) for r in standin.requests]
    assert paths == [("POST", "predictions"), ("GET", "models"), ("GET", "delivery"), ("GET", "delivery")]
    assert standin.requests[2].headers["authorization"] == "Bearer r8_test"  # the client sends it to delivery too
    version = client.models.get("stability-ai/sdxl").versions.get(SDXL_VID)
    assert version.cog_version == "0.8.6" and len(version.openapi_schema["components"]["schemas"]["Input"]
                                                  ["properties"]) == 19


def test_unseeded_sdxl_picks_and_logs_seed(standin: StandIn, client: replicate.Client) -> None:
    """Without a seed the server picks one, records it and logs it, as the real model does."""
    [item] = client.run(SDXL, input={"prompt": "dune", "width": 8, "height": 8})
    [rec] = standin.predictions(model="stability-ai/sdxl")
    assert rec.seed is not None and f"Using seed: {rec.seed}\n" in client.predictions.get(rec.id).logs
    assert decode_png(item.read())[2] == [color_for("dune", rec.seed)]


def test_img2prompt_with_path_upload(standin: StandIn, client: replicate.Client, tmp_path: pathlib.Path) -> None:
    """A Path input is uploaded through /v1/files and resolved internally; the prompt depends on the bytes."""
    frame = tmp_path / "frame_000001.png"
    frame.write_bytes(solid_png((1, 2, 3), 4, 4))
    text = client.run(IMG2PROMPT, input={"image": frame})
    assert text == prompt_for(frame.read_bytes()) and text.endswith("\n ")
    upload = standin.requests_matching("POST", "/v1/files")[0]
    assert b'filename="frame_000001.png"' in upload.body and b"Content-Type: image/png" in upload.body
    [rec] = standin.predictions(model="methexis-inc/img2prompt", status="succeeded")
    assert rec.input_sha256 == {"image": hashlib.sha256(frame.read_bytes()).hexdigest()}
    assert rec.input["image"].startswith(f"{standin.url}/v1/files/")
    p = client.predictions.create(version=IMG2PROMPT_VID, input={"image": frame}, file_encoding_strategy="base64",
                                  wait=5)
    assert p.output == text and p.input["image"].startswith("data:image/png;base64,")
    assert len(standin.requests_matching("POST", "/v1/files")) == 1
    opaque = client.run(IMG2PROMPT, input={"image": "https://example.com/a.png"})
    assert opaque == prompt_for(b"https://example.com/a.png")


def _near(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 12) -> bool:
    return max(abs(x - y) for x, y in zip(a, b)) <= tolerance  # H.264's rounding of a flat colour


def test_frame_interpolation_answers_as_film_does(standin: StandIn, client: replicate.Client,
                                                  tmp_path: pathlib.Path) -> None:
    """FILM returns one URL: for times_to_interpolate = 1 a PNG midway between the two frames; else a playable mp4 of
    2^k + 1 frames at 30 fps, the first and last the two frames, those between on the way from one to the other."""
    red, blue = (200, 40, 40), (40, 40, 200)
    frames = {"frame1": make_png(tmp_path / "a.png", red, (32, 24)), "frame2": make_png(tmp_path / "b.png", blue,
                                                                                          (32, 24))}
    mid = client.run(FILM, input=frames)
    assert isinstance(mid, FileOutput) and mid.url.endswith("/out.png")
    (tmp_path / "mid.png").write_bytes(mid.read())
    assert video_size(tmp_path / "mid.png") == (32, 24)
    assert frames_rgb(tmp_path / "mid.png") == [(120, 40, 120)]
    clip = client.run(FILM, input={**frames, "times_to_interpolate": 3})
    assert clip.url.endswith("/out.mp4")
    (tmp_path / "clip.mp4").write_bytes(clip.read())
    assert abs(probe_duration(tmp_path / "clip.mp4") - 9 / 30) < 0.02 and video_size(tmp_path / "clip.mp4") == (32, 24)
    got = frames_rgb(tmp_path / "clip.mp4")
    assert len(got) == 9 and _near(got[0], red) and _near(got[-1], blue)
    reds = [c[0] for c in got]
    assert all(a > b for a, b in zip(reds, reds[1:]))  # every frame between is further on the way to the second
    assert all(_near(c, tuple(r + (b - r) * j / 8 for r, b in zip(red, blue))) for j, c in enumerate(got))


def test_frame_interpolation_validates_its_input_and_says_how_long_it_ran(
        standin: StandIn, client: replicate.Client, tmp_path: pathlib.Path) -> None:
    """The model's schema (frame1 and frame2 required URIs, times_to_interpolate an integer from 1 to 8, nothing
    else); frames not named .png or .jpg fail as FILM's assertion does; predict_time grows with 2^k - 1."""
    frame = make_png(tmp_path / "a.png", (9, 9, 9), (8, 8))
    for bad, field in [({"frame1": frame}, "frame2 is required"),
                       ({"frame1": frame, "frame2": frame, "times_to_interpolate": 9}, "less than or equal to 8"),
                       ({"frame1": frame, "frame2": frame, "times_to_interpolate": 0}, "greater than or equal to 1"),
                       ({"frame1": frame, "frame2": frame, "times_to_interpolate": 1.5}, "Expected: integer"),
                       ({"frame1": frame, "frame2": frame, "fps": 30}, "Additional property fps")]:
        with pytest.raises(ReplicateError) as e:
            client.predictions.create(version=FILM.split(":")[1], input=bad)
        assert e.value.status == 422 and field in str(e.value.detail), bad
    version = client.models.get("google-research/frame-interpolation").versions.get(FILM.split(":")[1])
    output = version.openapi_schema["components"]["schemas"]["Output"]
    assert output["type"] == "string" and output["format"] == "uri"

    webp = tmp_path / "a.webp"
    webp.write_bytes(frame.read_bytes())
    with pytest.raises(ModelError, match="Please provide png or jpg images"):
        client.run(FILM, input={"frame1": webp, "frame2": frame})
    with pytest.raises(ModelError, match="Unknown image file format"):
        client.run(FILM, input={"frame1": "data:image/png;base64,AAAA", "frame2": frame})

    standin.set_predict_time(FILM, 0.25)
    for k, runs in [(1, 1), (2, 3), (4, 15)]:
        p = client.predictions.create(version=FILM.split(":")[1], input={"frame1": frame, "frame2": frame,
                                                                          "times_to_interpolate": k}, wait=5)
        p.wait()
        assert p.status == "succeeded" and p.metrics["predict_time"] == 0.25 * runs, k


def test_files_api(standin: StandIn, client: replicate.Client, tmp_path: pathlib.Path) -> None:
    """Upload (with metadata), get, list, delete (204), and 413 above the configured size."""
    path = tmp_path / "note.txt"
    path.write_bytes(b"hello")
    f = client.files.create(path, metadata={"frame": 7})
    assert (f.name, f.content_type, f.size, f.metadata) == ("note.txt", "text/plain", 5, {"frame": 7})
    assert f.checksums["sha256"] == hashlib.sha256(b"hello").hexdigest() and f.urls["get"].endswith(f.id)
    assert client.files.get(f.id).etag == hashlib.md5(b"hello").hexdigest()  # the real API's etag
    assert [x.id for x in client.files.list()] == [f.id]
    assert client.files.delete(f.id) is True
    with pytest.raises(ReplicateError) as err:
        client.files.get(f.id)
    assert err.value.status == 404
    standin.configure(max_file_size=3)
    with pytest.raises(ReplicateError) as err:
        client.files.create(path)
    assert err.value.status == 413 and "less than" in (err.value.detail or "")


def test_auth(standin: StandIn, client: replicate.Client, raw: httpx.Client) -> None:
    """Wrong token -> 401 with the real body; Token scheme accepted; set_token switches at runtime."""
    bad = replicate.Client(api_token="r8_wrong")
    with pytest.raises(ReplicateError) as err:
        bad.predictions.list()
    assert err.value.status == 401 and err.value.title == "Unauthenticated"
    assert raw.get("/v1/predictions", headers={"Authorization": "Token r8_test"}).status_code == 200
    resp = raw.get("/v1/predictions", headers={"Authorization": ""})
    assert resp.status_code == 401 and resp.headers["content-type"] == "application/problem+json"
    standin.set_token("r8_new")
    with pytest.raises(ReplicateError):
        client.predictions.list()
    assert replicate.Client(api_token="r8_new").predictions.list().results == []


def test_by_model_endpoint(standin: StandIn, client: replicate.Client) -> None:
    """Community models 404 on POST /v1/models/o/n/predictions; the official flux-schnell works."""
    with pytest.raises(ReplicateError) as err:
        client.run("stability-ai/sdxl", input=small())
    assert err.value.status == 404 and err.value.detail == "The requested resource could not be found."
    [image] = client.run(FLUX, input={"prompt": "a lighthouse", "seed": 4, "aspect_ratio": "16:9"})
    assert decode_png(image.read()) == (1344, 768, [color_for("a lighthouse", 4)])
    assert not standin.requests_matching("GET", "/v1/models/black-forest-labs")
    assert standin.count_creates("black-forest-labs/flux-schnell") == 1 and standin.count_creates() == 1


def test_validation_errors(standin: StandIn, client: replicate.Client, raw: httpx.Client) -> None:
    """Bad inputs and unknown versions give 422 in the real shapes; nothing is created."""
    with pytest.raises(ReplicateError) as err:
        client.predictions.create(version=SDXL_VID, input=small(num_outputs=5, scheduler="EULER", foo=1))
    assert err.value.status == 422 and err.value.title == "Input validation failed"
    assert "- input.num_outputs: Must be less than or equal to 4\n" in (err.value.detail or "")
    body = raw.post("/v1/predictions", json={"version": SDXL_VID, "input": {"width": "wide", "guidance_scale": 0,
                                                                          "apply_watermark": 1}}).json()
    assert {(f["type"], f["field"]) for f in body["invalid_fields"]} == {
        ("invalid_type", "input.width"), ("number_gte", "input.guidance_scale"),
        ("invalid_type", "input.apply_watermark")}
    with pytest.raises(ReplicateError) as err:
        client.predictions.create(version=IMG2PROMPT_VID, input={})
    assert err.value.status == 422 and "image is required" in (err.value.detail or "")
    with pytest.raises(ReplicateError) as err:
        client.predictions.create(version="0" * 64, input={})
    assert err.value.status == 422 and err.value.title == "Invalid version or not permitted"
    assert standin.count_creates() == 0


def test_list_pagination_and_forget(standin: StandIn, client: replicate.Client) -> None:
    """GET /v1/predictions: newest first, cursor URLs, created_after; forgotten predictions vanish."""
    standin.configure(page_size=2)
    ids = [client.predictions.create(version=SDXL_VID, input=small(str(i))).id for i in range(3)]
    page = client.predictions.list()
    assert [p.id for p in page] == ids[:0:-1] and page.next and page.next.startswith(standin.url)
    assert [p.id for p in client.predictions.list(page.next)] == [ids[0]]
    stamp = client.predictions.get(ids[1]).created_at
    assert [p.id for p in client.predictions.list(f"/v1/predictions?created_after={stamp}")] == [ids[2]]
    standin.forget(ids[2])
    with pytest.raises(ReplicateError) as err:
        client.predictions.get(ids[2])
    assert err.value.status == 404
    assert ids[2] not in [p.id for p in client.predictions.list()] and standin.count_creates() == 3


def test_sync_processing_quirk(standin: StandIn, client: replicate.Client) -> None:
    """With sync_status='processing', run() takes the output from the POST and never polls."""
    standin.configure(sync_status="processing")
    text = client.run(IMG2PROMPT, input={"image": "data:image/png;base64,AAAA"})
    assert text == prompt_for(b"\x00\x00\x00")
    assert not standin.requests_matching("GET", "/v1/predictions")
    assert client.predictions.create(version=IMG2PROMPT_VID, input={"image": "data:,x"}, wait=2).status == \
        "processing"


def test_plain_http_and_data_uri_modes(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain HTTP keeps outputs as str in run(); sync_data_uris inlines outputs as data: URIs (read locally)."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with StandIn(tmp_path, tls=False) as plain:
        for key, value in plain.env().items():
            monkeypatch.setenv(key, value)
        out = replicate.Client().run(SDXL, input=small())
        assert isinstance(out[0], str) and out[0].startswith("http://127.0.0.1:")
        plain.configure(sync_data_uris=True, sync_status="processing")
        p = replicate.Client().predictions.create(version=SDXL_VID, input=small(), wait=5)
        assert p.status == "processing" and p.output[0].startswith("data:image/png;base64,")
        [item] = replicate.Client().run(SDXL, input=small("inline"))
        assert decode_png(item.read()) == (32, 16, [color_for("inline", 1)])
        assert not plain.requests_matching("GET", "/delivery/")


def test_output_expiry(standin: StandIn, client: replicate.Client) -> None:
    """expire_outputs()/output_ttl remove output, logs and input; delivery then 404s."""
    [item] = client.run(SDXL, input=small())
    [rec] = standin.predictions()
    assert standin.expire_outputs() == 1
    p = client.predictions.get(rec.id)
    assert (p.status, p.output, p.logs, p.input) == ("succeeded", None, "", {})
    with pytest.raises(httpx.HTTPStatusError) as err:
        item.read()
    assert err.value.response.status_code == 404
    standin.configure(output_ttl=0.05)
    q = client.predictions.create(version=SDXL_VID, input=small(), wait=5)
    assert q.output is not None
    deadline = time.monotonic() + 5
    while client.predictions.get(q.id).output is not None and time.monotonic() < deadline:
        pass
    assert client.predictions.get(q.id).output is None


def test_async_run(standin: StandIn, client: replicate.Client) -> None:
    """async_run works through the same endpoints."""
    out = asyncio.run(client.async_run(IMG2PROMPT, input={"image": "https://example.com/b.png"}))
    assert out == prompt_for(b"https://example.com/b.png")


def test_many_concurrent_clients_and_stalled_handshake(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 concurrent clients are served while a raw TCP client sits on a connection without a TLS handshake."""
    for key, value in standin.env().items():
        monkeypatch.setenv(key, value)
    port = int(standin.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)):
        def one(i: int) -> str:
            return replicate.Client().run(IMG2PROMPT, input={"image": f"https://example.com/{i}.png"})
        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(one, range(64)))
    assert results == [prompt_for(f"https://example.com/{i}.png".encode()) for i in range(64)]
    assert standin.count_creates() == 64


def test_module_entry_point(tmp_path: pathlib.Path) -> None:
    """python -m tests.standin prints one JSON line, serves, and exits cleanly on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "tests.standin", "--workdir", str(tmp_path),
                             "--run-time", "stability-ai/sdxl=0.01", "--queue-delay", "0"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]  # stdout=PIPE
        reader.start()
        reader.join(15)
        info = json.loads(line[0])
        assert info["token"] == "r8_test" and info["url"].startswith("https://127.0.0.1:")
        # NB: replicate 1.0.7 ignores Client(verify=...) (it always passes its own transport to httpx), so the CA
        # must come through SSL_CERT_FILE or an explicit transport.
        transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=info["cert"]))
        c = replicate.Client(api_token=info["token"], base_url=info["url"], transport=transport)
        assert c.predictions.create(version=SDXL_VID, input=small(), wait=5).status == "succeeded"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_outputs_from_a_delivery_host_of_their_own_with_or_without_auth(tmp_path: pathlib.Path, host: str) -> None:
    """``delivery_host``: outputs come from a second listener (another port, or another address), which serves
    nothing else; ``delivery_auth``: a download without the token is refused."""
    with StandIn(tmp_path, delivery_host=host, delivery_auth=True) as s:
        verify = ssl.create_default_context(cafile=str(s.cert_path))
        auth = {"Authorization": f"Bearer {s.token}"}
        with httpx.Client(verify=verify, timeout=10) as http:
            body = {"version": SDXL_VID, "input": small()}
            pred = http.post(f"{s.url}/v1/predictions", json=body, headers={**auth, "Prefer": "wait=5"}).json()
            (url,) = pred["output"]
            assert url.startswith(f"https://{host}:") and not url.startswith(s.url)
            assert http.get(url).status_code == 401
            assert decode_png(http.get(url, headers=auth).content)[:2] == (32, 16)
            path = url.split("/delivery/")[0] + "/v1/predictions"
            assert http.get(path, headers=auth).status_code == 404  # a delivery host is not the API
            assert http.get(f"{s.url}/delivery/{pred['id']}/out-0.png", headers=auth).status_code == 404


def test_the_list_can_leave_out_data_inputs_as_the_real_api_is_reported_to(
        standin: StandIn, raw: httpx.Client) -> None:
    image = "data:image/png;base64," + __import__("base64").b64encode(solid_png((1, 2, 3), 8, 8)).decode()
    raw.post("/v1/predictions", json={"version": IMG2PROMPT_VID, "input": {"image": image}})
    assert raw.get("/v1/predictions").json()["results"][0]["input"] == {"image": image}
    standin.configure(list_data_inputs=False)
    listed = raw.get("/v1/predictions").json()["results"][0]
    assert listed["input"] == {} and raw.get(f"/v1/predictions/{listed['id']}").json()["input"] == {"image": image}

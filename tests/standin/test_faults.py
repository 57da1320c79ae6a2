"""Fault injection, outcome overrides, rate limits and the /__control API, as the unmodified client sees them."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydantic.v1
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

from tests.standin import IMG2PROMPT, SDXL, StandIn, decode_png

SDXL_VID = SDXL.split(":")[1]
NSFW = "NSFW content detected. Try running it again, or try a different prompt."


def small(prompt: str = "a red fox", **extra: object) -> dict[str, object]:
    """A cheap SDXL input."""
    return {"prompt": prompt, "width": 16, "height": 16, "seed": 1, **extra}


def create(client: replicate.Client, prompt: str = "a red fox", **extra: object) -> replicate.prediction.Prediction:
    """One create by version, without waiting."""
    return client.predictions.create(version=SDXL_VID, input=small(prompt, **extra))


def test_429_on_create_is_raised_not_retried(standin: StandIn, client: replicate.Client) -> None:
    """A scripted 429 on POST /v1/predictions raises ReplicateError(429) after one attempt; nothing is created."""
    rule = standin.inject("POST /v1/predictions", status=429, retry_after=3, times=1)
    with pytest.raises(ReplicateError) as err:
        create(client)
    assert err.value.status == 429 and err.value.detail == "Request was throttled. Your rate limit resets in ~3s."
    assert rule.hits == 1 and standin.count_creates() == 0
    assert create(client).status == "starting"
    assert [r.status for r in standin.requests] == [429, 201] and standin.requests[0].fault == "status"


def test_retryable_statuses_on_get(standin: StandIn, client: replicate.Client) -> None:
    """503/504/429 on GET are retried by the client (backoff, digits and ISO Retry-After); 500 is not."""
    p = create(client)
    standin.inject("GET /v1/predictions/*", status=503, times=1)
    standin.inject("GET /v1/predictions/*", status=504, retry_after=0, times=1)
    standin.inject("GET /v1/predictions/*", status=429, retry_after_date=0.3, times=1)
    t0 = time.monotonic()
    assert client.predictions.get(p.id).id == p.id
    assert time.monotonic() - t0 > 0.25  # the ISO Retry-After was honoured
    assert [r.status for r in standin.requests_matching("GET", "/v1/predictions/")] == [503, 504, 429, 200]
    standin.inject("GET /v1/predictions/*", status=500, times=1)
    with pytest.raises(ReplicateError) as err:
        client.predictions.get(p.id)
    assert err.value.status == 500 and len(standin.requests_matching("GET", "/v1/predictions/")) == 5


@pytest.mark.parametrize("status,title", [(401, "Unauthenticated"), (404, None), (413, None),
                                          (422, "Input validation failed"), (502, "Bad Gateway")])
def test_scripted_error_statuses(standin: StandIn, client: replicate.Client, status: int, title: str | None) -> None:
    """Each scripted status reaches the caller as ReplicateError with that status and a real-looking body."""
    standin.inject("POST /v1/predictions", status=status, times=1)
    with pytest.raises(ReplicateError) as err:
        create(client)
    assert err.value.status == status and err.value.title == title and err.value.detail


def test_non_json_bodies(standin: StandIn, client: replicate.Client) -> None:
    """An HTML 2xx body fails JSON decoding in the client; an HTML 502 is a ReplicateError without details."""
    p = create(client)
    standin.inject("GET /v1/predictions/*", "non_json", times=1)
    with pytest.raises(json.JSONDecodeError):
        client.predictions.get(p.id)
    standin.inject("POST /v1/predictions", "non_json", status=502, times=1)
    with pytest.raises(ReplicateError) as err:
        create(client)
    assert err.value.status == 502 and err.value.detail is None


def test_dropped_connections_before_and_after_create(standin: StandIn, client: replicate.Client) -> None:
    """close_before creates nothing; close_after creates the prediction although the client saw an error."""
    standin.inject("POST /v1/predictions", "close_before", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        create(client)
    assert standin.count_creates() == 0
    standin.inject("POST /v1/predictions", "close_after", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        create(client)
    assert standin.count_creates() == 1 and standin.requests[-1].status is None
    assert create(client).status == "starting" and standin.count_creates() == 2


def test_delay_hits_client_timeout(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delayed response trips the client's read timeout (httpx.ReadTimeout, not retried)."""
    for key, value in standin.env().items():
        monkeypatch.setenv(key, value)
    client = replicate.Client(timeout=httpx.Timeout(0.2))
    standin.inject("GET /v1/account", "delay", delay=1.0, times=1)
    with pytest.raises(httpx.ReadTimeout):
        client.accounts.current()
    assert client.accounts.current().username == "standin"


def test_delivery_faults(standin: StandIn, client: replicate.Client) -> None:
    """Delivery 410 -> HTTPStatusError; 503 is retried; a truncated body errors; a slow body arrives late."""
    [item] = client.run(SDXL, input=small())
    standin.inject("GET /delivery/*", status=410, times=1)
    with pytest.raises(httpx.HTTPStatusError) as err:
        item.read()
    assert err.value.response.status_code == 410
    standin.inject("GET /delivery/*", status=503, times=1)
    assert decode_png(item.read())[:2] == (16, 16)
    standin.inject("GET /delivery/*", "truncate", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        item.read()
    standin.inject("GET /delivery/*", "slow_body", delay=0.3, chunks=3, times=1)
    t0 = time.monotonic()
    assert decode_png(item.read())[:2] == (16, 16) and time.monotonic() - t0 > 0.25
    assert [r.status for r in standin.requests_matching("GET", "/delivery/")] == [410, 503, 200, 200, 200]


def test_versions_fault_fails_run_after_create(standin: StandIn, client: replicate.Client) -> None:
    """run() fails on a versions-endpoint 500 after the prediction was already created."""
    standin.inject("GET /v1/models/*/versions/*", status=500)
    with pytest.raises(ReplicateError) as err:
        client.run(SDXL, input=small())
    assert err.value.status == 500 and standin.count_creates() == 1


def test_call_numbers_and_probability(standin: StandIn, client: replicate.Client) -> None:
    """calls= picks exact call numbers; probability= fires some of the time (seeded)."""
    standin.inject("POST /v1/predictions", status=429, calls=[2])
    outcomes = []
    for _ in range(3):
        try:
            create(client)
            outcomes.append("ok")
        except ReplicateError as exc:
            outcomes.append(str(exc.status))
    assert outcomes == ["ok", "429", "ok"]
    rule = standin.inject("GET /v1/account", status=500, probability=0.5)
    for _ in range(20):
        try:
            client.accounts.current()
        except ReplicateError:
            pass
    assert rule.seen == 20 and 2 <= rule.hits <= 18


def test_outcome_overrides(standin: StandIn, client: replicate.Client) -> None:
    """Failed (by prompt, by predicate), server-side canceled, fewer outputs and null output, via run()."""
    standin.fail_predictions(NSFW, prompt_contains="nsfw")
    standin.fail_predictions("CUDA out of memory", match=lambda inp: inp["seed"] == 5)
    with pytest.raises(ModelError) as err:
        client.run(SDXL, input=small("an nsfw thing"))
    assert str(err.value) == NSFW and err.value.prediction.status == "failed"
    with pytest.raises(ModelError, match="CUDA out of memory"):
        client.run(SDXL, input=small(seed=5))
    standin.clear_faults()
    standin.override("canceled", model="stability-ai/sdxl", nth=[1])
    standin.override(num_outputs=1, model="stability-ai/sdxl", nth=[2])
    standin.override(output_null=True, model="stability-ai/sdxl", nth=[3])
    assert client.run(SDXL, input=small()) is None  # run() does not raise on canceled
    assert len(client.run(SDXL, input=small(num_outputs=3))) == 1
    assert client.run(SDXL, input=small()) is None
    assert len(client.run(SDXL, input=small(num_outputs=2))) == 2
    statuses = [(p.status, p.outcome) for p in standin.predictions()][2:]
    assert statuses == [("canceled", "canceled"), ("succeeded", "succeeded"), ("succeeded", "succeeded"),
                        ("succeeded", "succeeded")]


def test_stuck_aborted_missing_version(standin: StandIn, client: replicate.Client) -> None:
    """A stuck prediction stays 'starting' until canceled; 'aborted' and a missing version break 1.0.7 parsing."""
    standin.override("stuck", times=1)
    p = create(client)
    assert client.predictions.get(p.id).status == "starting"
    assert client.predictions.cancel(p.id).status == "canceled"
    standin.override("aborted", times=1)
    with pytest.raises(pydantic.v1.ValidationError):
        client.predictions.create(version=SDXL_VID, input=small(), wait=5)
    assert len(standin.predictions(status="aborted")) == 1
    standin.override(missing_version=True, times=1)
    with pytest.raises(pydantic.v1.ValidationError):
        create(client)


def test_processing_on_wait_timeout(standin: StandIn, client: replicate.Client) -> None:
    """processing_on_timeout reproduces issue #385: run(wait=1) returns None or a partial list without polling."""
    standin.override(processing_on_timeout=True, prompt_contains="none", run_time=30)
    standin.override(processing_on_timeout=True, partial_output=True, prompt_contains="partial", run_time=30)
    with ThreadPoolExecutor(2) as pool:  # both wait out the same second
        none = pool.submit(client.run, SDXL, input=small("none"), wait=1)
        partial = pool.submit(client.run, SDXL, input=small("partial", num_outputs=3), wait=1)
        assert none.result() is None
        [first] = partial.result()
    assert decode_png(first.read())[:2] == (16, 16)
    assert not standin.requests_matching("GET", "/v1/predictions/")


def test_rate_limits(standin: StandIn, client: replicate.Client, raw: httpx.Client) -> None:
    """Token buckets: creates over the limit get 429 (raised); GETs over the limit are retried by the client."""
    standin.set_rate_limit(creates_per_min=2)
    create(client)
    create(client)
    with pytest.raises(ReplicateError) as err:
        create(client)
    assert err.value.status == 429 and err.value.detail == "Request was throttled. Your rate limit resets in ~30s."
    standin.set_rate_limit(others_per_min=1200, burst=1)  # one token, refilled every 50 ms
    for _ in range(3):
        assert client.accounts.current().username == "standin"  # 429s are retried after >= 90 ms
    statuses = [r.status for r in standin.requests_matching("GET", "/v1/account")]
    assert 429 in statuses and statuses.count(200) == 3 and statuses[-1] == 200
    standin.set_rate_limit(low_credit=True)
    resp = raw.post("/v1/predictions", json={"version": SDXL_VID, "input": small()})
    assert resp.status_code == 201 and resp.headers["ratelimit-remaining"] == "0"
    resp = raw.post("/v1/predictions", json={"version": SDXL_VID, "input": small()})
    assert resp.status_code == 429 and resp.headers["content-type"] == "application/problem+json"


def test_control_http_api(standin: StandIn, client: replicate.Client, raw: httpx.Client) -> None:
    """Another process can drive everything through /__control (JSON, no auth)."""
    def control(action: str, **body: object) -> dict:
        resp = raw.post(f"/__control/{action}", json=body, headers={"Authorization": ""})
        assert resp.status_code == 200, resp.text
        return resp.json()

    rule = control("inject", route="POST /v1/predictions", status=429, times=1)["rule"]
    with pytest.raises(ReplicateError):
        create(client)
    control("remove_rule", rule=rule)
    control("fail_predictions", error="CUDA out of memory", prompt_contains="boom")
    with pytest.raises(ModelError, match="CUDA out of memory"):
        client.run(SDXL, input=small("boom"))
    control("set_latency", model="methexis-inc/img2prompt", queue_delay=0, run_time=0.001)
    assert client.run(IMG2PROMPT, input={"image": "data:,x"}).startswith("a painting of ")
    preds = control("predictions", model="stability-ai/sdxl")["predictions"]
    assert [p["status"] for p in preds] == ["failed"] and preds[0]["error"] == "CUDA out of memory"
    assert control("count_creates")["count"] == 2
    assert len(raw.get("/__control/requests", params={"method": "POST", "path_prefix": "/v1/pred"}).json()
               ["requests"]) == 3
    assert control("expire_outputs")["expired"] == 2
    control("forget", id=preds[0]["id"])
    with pytest.raises(ReplicateError):
        client.predictions.get(preds[0]["id"])
    control("configure", sync_status="processing")
    control("set_rate_limit", scale=2)
    control("set_token", token="r8_other")
    with pytest.raises(ReplicateError) as err:
        client.accounts.current()
    assert err.value.status == 401
    assert raw.post("/__control/nope").status_code == 404
    assert raw.post("/__control/configure", json={"bogus": 1}).status_code == 400
    assert raw.post("/__control/inject", json={"route": "GET /x", "kind": "explode"}).status_code == 400
    assert not standin.requests_matching(path_prefix="/__control")

"""Pure rules of the Replicate backend: what a failure means, how long a 429 asks us to wait, prompt cleaning, what
the ledger keeps of an input."""

import base64
import hashlib

import httpx
import pytest
from replicate.exceptions import ReplicateError

from shd.backends.base import Status, clean_prompt, ledger_form
from shd.backends.models import Painter, Prompter
from shd.backends.replicate import classify, model_failure, replicate_host, retry_after_hint
from shd.errors import AuthFailed, ModelFailed, OutputGone, RateLimited, Rejected, Transient


def err(status: int, detail: str = "x") -> ReplicateError:
    return ReplicateError(status=status, detail=detail)


def test_retry_after_seconds_date_reset_header_and_body_hint() -> None:
    assert retry_after_hint({"retry-after": "7"}, None) == 7.0
    assert retry_after_hint({"retry-after": "2026-01-01T00:00:10Z"}, None, now=1767225600.0) == 10.0
    assert retry_after_hint({"retry-after": "Thu, 01 Jan 2026 00:00:05 GMT"}, None, now=1767225600.0) == 5.0
    assert retry_after_hint({"ratelimit-reset": "3"}, None) == 3.0
    assert retry_after_hint({}, "Request was throttled. Your rate limit resets in ~30s.") == 30.0
    assert retry_after_hint({}, "Request was throttled. Expected available in 1 second.") == 1.0
    assert retry_after_hint({}, "no hint here") is None


@pytest.mark.parametrize(("status", "kind"), [
    (429, RateLimited), (401, AuthFailed), (402, AuthFailed), (403, AuthFailed), (500, Transient),
    (502, Transient), (503, Transient), (504, Transient), (422, Rejected), (404, Rejected), (413, Rejected),
    (400, Rejected),
])
def test_api_errors_map_to_what_the_scheduler_does_next(status: int, kind: type) -> None:
    assert type(classify(err(status))) is kind


def test_a_create_that_was_sent_but_not_answered_may_have_created_a_prediction() -> None:
    read_timeout = classify(httpx.ReadTimeout("slow"), creating=True)
    dropped = classify(httpx.RemoteProtocolError("closed"), creating=True)
    refused = classify(httpx.ConnectError("refused"), creating=True)
    assert isinstance(read_timeout, Transient) and read_timeout.maybe_created
    assert isinstance(dropped, Transient) and dropped.maybe_created
    assert isinstance(refused, Transient) and not refused.maybe_created  # never reached the server
    assert not classify(httpx.ReadTimeout("slow")).maybe_created  # a GET creates nothing


def test_expired_downloads_are_output_gone() -> None:
    req = httpx.Request("GET", "https://x/out.png")
    gone = httpx.HTTPStatusError("gone", request=req, response=httpx.Response(404, request=req))
    assert isinstance(classify(gone), OutputGone)


def test_model_errors_nsfw_gets_a_new_seed_interruptions_are_transient_others_fail() -> None:
    nsfw = model_failure("NSFW content detected. Try running it again, or try a different prompt.")
    assert isinstance(nsfw, ModelFailed) and nsfw.retry_with_new_seed
    assert type(model_failure("Prediction interrupted; please retry (code: PA)")) is Transient
    assert type(model_failure("Director: unexpected error handling prediction (E9828)")) is Transient
    assert type(model_failure(None)) is Transient
    bad = model_failure("invalid image")
    assert isinstance(bad, ModelFailed) and not bad.retry_with_new_seed


def test_prompts_are_cleaned_to_one_line() -> None:
    assert clean_prompt("  a cat,\n on a mat \n") == "a cat, on a mat"


class _NoRemote:
    def fetch(self, item: object) -> bytes:
        return b"img:" + str(item).encode()


def test_outputs_removed_by_retention_mean_create_again() -> None:
    prompter = Prompter(_NoRemote(), "o/n:v")  # type: ignore[arg-type]  # only fetch() is called
    painter = Painter(_NoRemote(), "o/n:v")  # type: ignore[arg-type]  # only fetch() is called
    with pytest.raises(OutputGone):
        prompter.result(Status("p", "succeeded", output=None))
    with pytest.raises(OutputGone):
        painter.result(Status("p", "succeeded", output=None))
    with pytest.raises(ModelFailed):
        painter.result(Status("p", "succeeded", output=[]))
    assert painter.result(Status("p", "succeeded", output=["https://a/1.png"])) == b"img:https://a/1.png"
    assert prompter.result(Status("p", "succeeded", output=" a\nb ")) == "a b"


def test_the_ledger_keeps_inline_files_as_their_digest_and_nothing_else_changes() -> None:
    """data:<mime>;base64 values (at any depth) become data:<mime>;sha256,<digest of the bytes>; URLs, text and
    numbers are kept; applying it twice changes nothing; a malformed payload is kept as it was sent."""
    png = b"\x89PNG\r\n\x1a\n-frame-bytes"
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    digest = "data:image/png;sha256," + hashlib.sha256(png).hexdigest()
    sent = {"image": uri, "mask": "https://api.replicate.com/v1/files/abc", "prompt": "data: a poem", "seed": 7,
            "refs": [uri, {"deep": uri}]}
    assert ledger_form(sent) == {"image": digest, "mask": "https://api.replicate.com/v1/files/abc",
                                 "prompt": "data: a poem", "seed": 7, "refs": [digest, {"deep": digest}]}
    assert ledger_form(ledger_form(sent)) == ledger_form(sent)
    assert ledger_form({"image": "data:image/png;base64,@@not base64@@"}) == {
        "image": "data:image/png;base64,@@not base64@@"}


@pytest.mark.parametrize(("url", "api", "ours"), [
    ("https://replicate.delivery/pbxt/abc/out-0.png", "https://api.replicate.com", True),
    ("https://pbxt.replicate.delivery/abc/out-0.png", "https://api.replicate.com", True),
    ("https://api.replicate.com/v1/files/abc", "https://api.replicate.com", True),
    ("https://127.0.0.1:9999/delivery/x", "https://127.0.0.1:4443", True),        # the API's host, another port
    ("https://evil.example/out.png", "https://api.replicate.com", False),
    ("https://replicate.delivery.evil.example/x", "https://api.replicate.com", False),
    ("https://notreplicate.delivery/x", "https://api.replicate.com", False),
    ("http://replicate.delivery/x", "https://api.replicate.com", False),           # never in clear text
    ("https://127.0.0.2:4443/delivery/x", "https://127.0.0.1:4443", False),
    ("http://127.0.0.1:5000/delivery/x", "http://127.0.0.1:4443", True),           # a plain-HTTP test server
])
def test_the_token_goes_only_to_replicates_own_hosts(url: str, api: str, ours: bool) -> None:
    assert replicate_host(httpx.URL(url), httpx.URL(api)) is ours

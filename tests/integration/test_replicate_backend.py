"""ReplicateRemote through the real `replicate` client over HTTPS to the stand-in: how a frame reaches the model
(inline or uploaded), and how a create whose answer was lost is found again by its ledger form."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from shd import config
from shd.backends.base import ledger_form
from shd.backends.replicate import ReplicateRemote
from shd.errors import Rejected
from tests.standin import StandIn, prompt_for
from tests.videos import make_png


@pytest.fixture
def remote(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> ReplicateRemote:
    for key, value in standin.env().items():
        monkeypatch.setenv(key, value)
    return ReplicateRemote(standin.token, base_url=standin.url, inline_max_bytes=4096)


def test_a_small_frame_goes_inline_and_a_large_one_is_uploaded_as_a_named_png(
        tmp_path: Path, standin: StandIn, remote: ReplicateRemote) -> None:
    """Up to inline_max_bytes the frame is a data: URI in the input (no upload request); above it, the frame is
    uploaded through the Files API under its own name, and the input carries the file's URL."""
    small = make_png(tmp_path / "000001.png", (200, 40, 40), (8, 8))
    large = tmp_path / "000002.png"
    large.write_bytes(small.read_bytes() + b"\0" * 5000)  # trailing bytes: still a PNG to the model, 5 KB more
    assert small.stat().st_size <= 4096 < large.stat().st_size

    inline = remote.upload(small)
    assert inline.startswith("data:image/png;base64,")
    assert standin.files == [] and not standin.requests_matching("POST", "/v1/files")

    url = remote.upload(large)
    (uploaded,) = standin.files
    assert url.startswith(standin.url) and uploaded.id in url
    assert (uploaded.name, uploaded.content_type, uploaded.content) == ("000002.png", "image/png",
                                                                         large.read_bytes())

    # Both forms reach the model as the frame's bytes.
    for frame, image in ((small, inline), (large, url)):
        status = remote.create(config.IMG2PROMPT, {"image": image})
        assert status.status == "succeeded" and status.output == prompt_for(frame.read_bytes())


def test_a_lost_inline_create_is_found_by_its_ledger_form(tmp_path: Path, standin: StandIn,
                                                          remote: ReplicateRemote) -> None:
    """The ledger keeps an inline frame as its digest; find() matches the server's echo of the full data: URI
    against it, and tells two frames apart."""
    a = make_png(tmp_path / "a.png", (10, 200, 10), (8, 8))
    b = make_png(tmp_path / "b.png", (10, 10, 200), (8, 8))
    started = time.time()
    sent = {"image": remote.upload(a)}
    created = remote.create(config.IMG2PROMPT, sent)
    remote.create(config.IMG2PROMPT, {"image": remote.upload(b)})

    recorded = ledger_form(sent)
    assert recorded == {"image": f"data:image/png;sha256,{hashlib.sha256(a.read_bytes()).hexdigest()}"}
    found = remote.find(config.IMG2PROMPT, recorded, started)
    assert found is not None and found.remote_id == created.remote_id
    other = ledger_form({"image": remote.upload(make_png(tmp_path / "c.png", (1, 2, 3), (8, 8)))})
    assert remote.find(config.IMG2PROMPT, other, started) is None


def test_an_unreadable_frame_is_rejected_naming_the_file(tmp_path: Path, remote: ReplicateRemote) -> None:
    missing = tmp_path / "frames" / "000007.png"
    with pytest.raises(Rejected, match=r"000007\.png: cannot read frame"):
        remote.upload(missing)

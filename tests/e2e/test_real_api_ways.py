"""shd end to end against the stand-in behaving as the real API does, not just as its documentation says: a
synchronous create answered `processing`; `data:` inputs not echoed by the predictions list; outputs served from a
host other than the API's, with or without the token required. shd runs as a user runs it (`shd process`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shd.store import Store
from tests.conftest import run_shd, write_config
from tests.standin import StandIn
from tests.videos import make_video

pytestmark = pytest.mark.slow
FRAMES = 2


@pytest.fixture
def make_standin(tmp_path: Path) -> Iterator:
    started: list[StandIn] = []

    def make(**options: object) -> StandIn:
        started.append(StandIn(tmp_path / "standin", **options).start())
        return started[-1]

    yield make
    for s in started:
        s.stop()


def process(tmp_path: Path, s: StandIn, **replicate: object) -> tuple[int, str, Store]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "SHD_CONFIG", "CREDENTIALS_DIRECTORY")}
    env.update(s.env())
    cfg = write_config(tmp_path / "shd.toml", {"replicate": dict(replicate), "pipeline": {"audio": "none"}})
    src = make_video(tmp_path / "clip.mp4", seconds=float(FRAMES), size=(64, 48), audio=False)
    r = run_shd("process", str(src), "--config", str(cfg), env=env, cwd=tmp_path)
    return r.returncode, r.stderr, Store.open_readonly(tmp_path / "state" / "shd.db")


def painted_once_each(s: StandIn, store: Store) -> bool:
    (job,) = store.jobs()
    return (job.state == "done" and [f.state for f in store.frames(job.id)] == ["generated"] * FRAMES
            and s.count_creates() == 2 * FRAMES and all(p.status == "succeeded" for p in store.predictions()))


def test_a_synchronous_create_answered_processing_with_its_output_is_painted_once(
        tmp_path: Path, make_standin) -> None:
    s = make_standin(sync_status="processing")
    rc, err, store = process(tmp_path, s)
    assert rc == 0, err
    assert painted_once_each(s, store)


@pytest.mark.parametrize("auth", [True, False], ids=["token-required", "no-token-required"])
def test_outputs_from_a_delivery_host_of_replicates_own_get_the_token_and_are_painted(
        tmp_path: Path, make_standin, auth: bool) -> None:
    """Another listener on the API's host (as replicate.delivery is Replicate's): the token goes with each
    download, whether the host asks for it or not."""
    s = make_standin(delivery_host="127.0.0.1", delivery_auth=auth)
    rc, err, store = process(tmp_path, s)
    assert rc == 0, err
    assert painted_once_each(s, store)
    downloads = s.requests_matching("GET", "/delivery/")
    assert len(downloads) == FRAMES and all(d.headers.get("authorization") == f"Bearer {s.token}"
                                            for d in downloads)


def test_outputs_from_any_other_host_never_see_the_token(tmp_path: Path, make_standin) -> None:
    s = make_standin(delivery_host="127.0.0.2")
    rc, err, store = process(tmp_path, s)
    assert rc == 0, err
    assert painted_once_each(s, store)
    downloads = s.requests_matching("GET", "/delivery/")
    assert len(downloads) == FRAMES and not any("authorization" in d.headers for d in downloads)


def test_another_host_asking_for_the_token_fails_the_frames_with_the_reason_and_pauses_nothing(
        tmp_path: Path, make_standin) -> None:
    s = make_standin(delivery_host="127.0.0.2", delivery_auth=True)
    rc, err, store = process(tmp_path, s, max_attempts=1)
    assert rc == 0 and "Traceback" not in err, err  # the video is made, its slots filled (hold)
    (job,) = store.jobs()
    frames = store.frames(job.id)
    assert all(f.state == "failed" and f.filled_with and "asks for credentials" in (f.error or "") for f in frames)
    assert "paused" not in err and s.count_creates() == 2 * FRAMES
    assert not any("authorization" in d.headers for d in s.requests_matching("GET", "/delivery/"))


def test_a_lost_create_of_an_inline_frame_that_the_list_does_not_echo_is_paid_again_and_counted(
        tmp_path: Path, make_standin) -> None:
    """The real list leaves out data: inputs: a create whose answer was lost cannot be found by its input, so it
    is created again, and the ledger shows the lost one (README: inline_max_kb's trade-off)."""
    s = make_standin(list_data_inputs=False)
    s.inject("POST /v1/predictions", kind="close_after", calls=[1])
    rc, err, store = process(tmp_path, s, inline_max_kb=256, concurrency=1)
    assert rc == 0, err
    (job,) = store.jobs()
    assert [f.state for f in store.frames(job.id)] == ["generated"] * FRAMES
    statuses = sorted(p.status for p in store.predictions())
    assert statuses == ["lost"] + ["succeeded"] * 2 * FRAMES and s.count_creates() == 2 * FRAMES + 1
    lost = next(p for p in store.predictions() if p.status == "lost")
    assert lost.input["image"].startswith("data:image/png;sha256,")  # looked up, not found: created again

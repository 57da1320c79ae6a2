"""The SQLite store on a real database file: transitions, the prediction ledger, migrations, read-only access."""

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from shd import config, jobs, migrations, status
from shd.errors import DatabaseDamaged, DiskFull, IllegalTransition, StoreError, UsageError
from shd.states import FrameState as F
from shd.states import JobState as J
from shd.states import PairState as P
from shd.states import Stage
from shd.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "state" / "shd.db")
    s.create_job("j1", source_name="a.mp4", origin_path=tmp_path / "a.mp4", source_path=tmp_path / "a.mp4",
                 work_dir=tmp_path / "w", mode="process", fps=1.0)
    return s


def test_open_uses_wal_full_sync_and_records_the_schema_version(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "frames", "predictions", "events", "_sqlite_migrations"} <= names
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_reopening_applies_no_migration_twice(store: Store, tmp_path: Path) -> None:
    store.close()
    again = Store.open(tmp_path / "state" / "shd.db")
    assert again.job("j1").state == J.QUEUED
    assert len(migrations.migrations.applied(again.db)) == migrations.LATEST


def test_illegal_job_transition_is_refused_and_writes_nothing(store: Store) -> None:
    with pytest.raises(IllegalTransition):
        store.transition_job("j1", J.DONE)
    assert store.job("j1").state == J.QUEUED
    assert [e["to_state"] for e in store.events("j1")] == ["queued"]


def test_frame_transitions_are_checked_and_logged(store: Store, tmp_path: Path) -> None:
    assert store.add_frame("j1", 0, 0.0, tmp_path / "0.png")
    assert not store.add_frame("j1", 0, 0.0, tmp_path / "0.png")  # idempotent
    with pytest.raises(IllegalTransition):
        store.transition_frame("j1", 0, F.GENERATED)
    store.transition_frame("j1", 0, F.PROMPTING)
    store.transition_frame("j1", 0, F.PROMPTED, prompt="a cat")
    f = store.frame("j1", 0)
    assert (f.state, f.prompt) == ("prompted", "a cat")
    kinds = [(e["kind"], e["from_state"], e["to_state"]) for e in store.events("j1") if e["kind"] == "frame"]
    assert kinds == [("frame", None, "extracted"), ("frame", "extracted", "prompting"),
                     ("frame", "prompting", "prompted")]


def test_a_paid_call_is_recorded_before_it_is_sent_and_its_id_when_known(store: Store, tmp_path: Path) -> None:
    store.add_frame("j1", 0, 0.0, tmp_path / "0.png")
    p = store.begin_prediction("j1", 0, Stage.PROMPT, model="m:v", input={"image": "u"}, reason="first")
    assert (p.status, p.remote_id, p.attempt) == ("creating", None, 1)
    assert store.frame("j1", 0).state == F.PROMPTING
    p = store.update_prediction(p.id, status="starting", remote_id="abc")
    p = store.update_prediction(p.id, status="succeeded", output="a cat", predict_time=1.5)
    assert (p.remote_id, p.status, p.predict_time, p.completed_at is not None) == ("abc", "succeeded", 1.5, True)
    assert store.latest_prediction("j1", 0, Stage.PROMPT) == p
    second = store.begin_prediction("j1", 0, Stage.PROMPT, model="m:v", input={"image": "u"}, reason="again")
    assert second.attempt == 2
    store.update_prediction(second.id, status="refused", error="429")
    assert [a.status for a in store.attempts("j1", 0, Stage.PROMPT)] == ["succeeded", "refused"]
    assert store.attempts("j1", 0, Stage.PROMPT, since=second.created_at + 1) == []


def test_a_transition_from_a_known_state_is_still_checked_when_the_frame_moved_meanwhile(
        store: Store, tmp_path: Path) -> None:
    """With `expect`, a frame still in that state moves in one statement; a frame that moved meanwhile (failed or
    reset by another process) is read and checked as without it, and the events say where it really came from."""
    store.add_frame("j1", 0, 0.0, tmp_path / "0.png")
    store.transition_frame("j1", 0, F.PROMPTING, expect=F.EXTRACTED)
    store.transition_frame("j1", 0, F.FAILED, error="gave up")  # behind the caller's back
    with pytest.raises(IllegalTransition):
        store.transition_frame("j1", 0, F.GENERATED, image_path=tmp_path / "g.png", expect=F.PROMPTING)
    assert (store.frame("j1", 0).state, store.frame("j1", 0).image_path) == (F.FAILED, None)
    store.transition_frame("j1", 0, F.EXTRACTED, expect=F.PROMPTING)  # stale, but legal from where it is
    moves = [(e["from_state"], e["to_state"]) for e in store.events("j1") if e["kind"] == "frame"]
    assert moves == [(None, "extracted"), ("extracted", "prompting"), ("prompting", "failed"), ("failed", "extracted")]


def test_a_paid_call_started_from_a_stale_reading_of_its_frame_is_recorded_right(store: Store, tmp_path: Path) -> None:
    """begin_prediction with an `expect` that no longer holds reads the frame: it refuses a frame that cannot start
    the stage, and counts attempts from the ledger either way."""
    store.add_frame("j1", 0, 0.0, tmp_path / "0.png")
    first = store.begin_prediction("j1", 0, Stage.PROMPT, model="m:v", input={}, reason="first", expect=F.EXTRACTED)
    store.update_prediction(first, status="failed", error="boom")
    # The caller still thinks the frame is 'extracted'; it is 'prompting': a retry is allowed and is attempt 2.
    again = store.begin_prediction("j1", 0, Stage.PROMPT, model="m:v", input={}, reason="retry", expect=F.EXTRACTED)
    assert (again.attempt, store.frame("j1", 0).state) == (2, F.PROMPTING)
    store.transition_frame("j1", 0, F.FAILED, error="gave up")
    with pytest.raises(StoreError, match="frame 0 is failed, cannot start prompt"):
        store.begin_prediction("j1", 0, Stage.PROMPT, model="m:v", input={}, reason="late", expect=F.PROMPTING)
    assert [p.attempt for p in store.predictions("j1")] == [1, 2]


def test_only_transactions_a_restart_can_redo_for_free_skip_the_fsync(store: Store, tmp_path: Path) -> None:
    """durable=False runs at synchronous=NORMAL; every other transaction, and every one after it (even one that
    failed), runs at FULL."""
    level = lambda: store._conn.execute("PRAGMA synchronous").fetchone()[0]  # noqa: E731 - a probe, read often
    with store.tx(durable=False):
        assert level() == 1  # NORMAL
    assert level() == 2
    with pytest.raises(RuntimeError), store.tx(durable=False):
        raise RuntimeError("boom")
    assert level() == 2
    with store.tx():
        assert level() == 2
        with store.tx(durable=False):  # nested: joins the outer, durable transaction
            assert level() == 2
    with pytest.raises(StoreError, match="durable write cannot join"), store.tx(durable=False):
        store.add_frame("j1", 0, 0.0, tmp_path / "0.png")
        store.transition_frame("j1", 0, F.PROMPTING)  # would not be durable: refused, and the whole tx undone
    assert level() == 2 and store.frames("j1") == []


def test_a_remote_id_is_recorded_once(store: Store, tmp_path: Path) -> None:
    store.add_frame("j1", 0, 0.0, tmp_path / "0.png")
    store.add_frame("j1", 1, 1.0, tmp_path / "1.png")
    a = store.begin_prediction("j1", 0, Stage.PROMPT, model="m:v", input={}, reason="first")
    b = store.begin_prediction("j1", 1, Stage.PROMPT, model="m:v", input={}, reason="first")
    store.update_prediction(a.id, status="starting", remote_id="same")
    with pytest.raises(StoreError, match="UNIQUE constraint failed"):  # no sqlite3 exception leaves the store
        store.update_prediction(b.id, status="starting", remote_id="same")


def test_many_threads_write_without_busy_errors(store: Store, tmp_path: Path) -> None:
    def work(base: int) -> None:
        for i in range(base, base + 25):
            store.add_frame("j1", i, float(i), tmp_path / f"{i}.png")
            store.transition_frame("j1", i, F.PROMPTING)

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.progress("j1")["extracted"] == 200


def test_readonly_status_reader_sees_commits_and_cannot_write(store: Store) -> None:
    reader = Store.open_readonly(store.path)
    store.transition_job("j1", J.EXTRACTING)
    assert reader.job("j1").state == J.EXTRACTING
    with pytest.raises(sqlite3.OperationalError):
        reader._conn.execute("DELETE FROM jobs")


def test_readonly_open_of_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database yet"):
        Store.open_readonly(tmp_path / "none.db")


def test_find_job_by_unique_prefix(store: Store, tmp_path: Path) -> None:
    store.create_job("j2", source_name="b.mp4", origin_path=tmp_path, source_path=None, work_dir=tmp_path,
                     mode="daemon", fps=1.0)
    assert store.find_job("j1").id == "j1"
    with pytest.raises(UsageError, match="matches 2 jobs"):  # bad usage (exit 2), not a database error
        store.find_job("j")
    with pytest.raises(UsageError, match="no job matches"):
        store.find_job("zz")


def _corrupt_middle_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for n in range(1, len(data) // page - 1):
        data[n * page:(n + 1) * page] = bytes((i * 37 + n) % 251 for i in range(page))
    db.write_bytes(bytes(data))


def test_a_damaged_database_is_a_database_damaged_error_saying_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "state" / "shd.db"
    s = Store.open(db)
    for i in range(40):
        s.create_job(f"j{i}", source_name="a.mp4" * 20, origin_path=tmp_path / "a.mp4", source_path=None,
                     work_dir=tmp_path / "w", mode="daemon", fps=1.0)
    s.close()
    _corrupt_middle_pages(db)
    with pytest.raises(DatabaseDamaged) as e:
        Store.open(db, check=True)
    assert str(e.value).startswith(f"{db}: the database is damaged") and ".recover" in str(e.value)
    reader = Store.open_readonly(db)
    with pytest.raises(DatabaseDamaged):  # not sqlite3.DatabaseError
        reader.jobs()
    assert isinstance(reader.damaged, DatabaseDamaged)


def test_a_full_disk_is_disk_full_the_transaction_is_undone_and_the_store_works_once_there_is_room(
        tmp_path: Path, tmpfs) -> None:
    state = tmpfs(tmp_path / "state", "2m")
    s = Store.open(state / "shd.db")
    ballast = state / "ballast"
    with ballast.open("wb", buffering=0) as fh:  # unbuffered: nothing is left to flush (and fail) at close
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    with pytest.raises(DiskFull, match="no space left on device"):
        for i in range(1000):
            s.create_job(f"j{i}", source_name="x" * 200, origin_path=tmp_path / ("x" * 200), source_path=None,
                         work_dir=tmp_path / "w", mode="daemon", fps=1.0)
    ballast.unlink()
    s.create_job("after", source_name="a.mp4", origin_path=tmp_path / "a.mp4", source_path=None,
                 work_dir=tmp_path / "w", mode="daemon", fps=1.0)
    assert s.job("after").state == J.QUEUED


def test_the_database_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        s = Store.open(tmp_path / "state" / "shd.db")
        s.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "shd.db").stat().st_mode) == 0o600


def _painted(store: Store, tmp_path: Path, n: int, *, failed: tuple[int, ...] = ()) -> None:
    store.transition_job("j1", J.EXTRACTING)
    store.transition_job("j1", J.RUNNING)
    for i in range(n):
        store.add_frame("j1", i, float(i), tmp_path / f"{i}.png")
        store.transition_frame("j1", i, F.FAILED if i in failed else F.PROMPTING, error="x")
        if i not in failed:
            store.transition_frame("j1", i, F.PROMPTED, prompt="p")
            store.transition_frame("j1", i, F.GENERATING)
            store.transition_frame("j1", i, F.GENERATED, image_path=tmp_path / f"g{i}.png")


def test_pairs_are_recorded_once_checked_and_moved_by_their_prediction(store: Store, tmp_path: Path) -> None:
    """A FILM prediction moves its pair as a frame's moves its frame; illegal moves are refused."""
    _painted(store, tmp_path, 3)
    store.add_pairs("j1", [0, 1])
    store.add_pairs("j1", [0])  # idempotent
    assert [(p.idx, p.state) for p in store.pairs("j1")] == [(0, "painted"), (1, "painted")]
    with pytest.raises(IllegalTransition):
        store.transition_pair("j1", 0, P.INTERPOLATED)
    pred = store.begin_prediction("j1", 0, Stage.FILM, model="f/ilm:v", input={"times_to_interpolate": 2},
                                  reason="first", expect=P.PAINTED, reuse_key="k")
    assert store.pair("j1", 0).state == "interpolating" and store.frame("j1", 0).state == "generated"
    assert store.key_in_flight("k")
    store.update_prediction(pred, status="succeeded", remote_id="r1", predict_time=3.0)
    store.transition_pair("j1", 0, P.INTERPOLATED, clip_path=tmp_path / "c.mp4", expect=P.INTERPOLATING)
    assert store.pair("j1", 0).clip_path == str(tmp_path / "c.mp4") and not store.key_in_flight("k")
    store.transition_pair("j1", 1, P.FAILED, error="model error")
    with pytest.raises(StoreError, match="job j1 pair 1 is failed, cannot start film"):
        store.begin_prediction("j1", 1, Stage.FILM, model="f/ilm:v", input={}, reason="first")
    assert store.pair_counts("j1") == {"interpolated": 1, "failed": 1, "crossfaded": 0}
    kinds = [(e["from_state"], e["to_state"], e["frame_idx"]) for e in store.events("j1") if e["kind"] == "pair"]
    assert kinds == [(None, "painted", 0), (None, "painted", 1), ("painted", "interpolating", 0),
                     ("interpolating", "interpolated", 0), ("painted", "failed", 1)]
    assert store.recent_predict_times("f/ilm:v", same={"times_to_interpolate": 2}) == [3.0]
    assert store.recent_predict_times("f/ilm:v", same={"times_to_interpolate": 4}) == []


def test_a_gap_that_shows_a_crossfade_is_recorded_and_shd_retry_tries_it_again(store: Store, tmp_path: Path) -> None:
    """Gap 0-1 failed at FILM, gaps 1-2 and 2-3 never became pairs (frame 2 failed): all three crossfaded, with
    why. A retry gives the failed pair another go and forgets the gaps it made up."""
    _painted(store, tmp_path, 4, failed=(2,))
    store.add_pairs("j1", [0])
    store.transition_pair("j1", 0, P.FAILED, error="model error")
    store.set_pair_fills("j1", {0: ("crossfade", "model error"), 1: ("crossfade", "frame 2 was not painted"),
                                2: ("crossfade", "frame 2 was not painted")})
    assert [(p.idx, p.state, p.error, p.filled_with) for p in store.pairs("j1")] == [
        (0, "failed", "model error", "crossfade"), (1, "failed", "frame 2 was not painted", "crossfade"),
        (2, "failed", "frame 2 was not painted", "crossfade")]
    assert store.pair_counts("j1") == {"failed": 3, "crossfaded": 3}
    store.retry_pairs("j1")
    assert [(p.idx, p.state, p.error, p.filled_with) for p in store.pairs("j1")] == [(0, "painted", None, None)]


def test_status_counts_the_pairs_and_waits_for_them_in_the_eta(store: Store, tmp_path: Path) -> None:
    """Three frames (two painted, one pair interpolated): 3 of 5 pieces of work done after 10 s, so 6.7 s to go; a
    job without pairs has none."""
    assert status.job_summary(store, store.job("j1"))["pairs"] is None
    _painted(store, tmp_path, 2)
    store.add_frame("j1", 2, 2.0, tmp_path / "2.png")
    store.add_pairs("j1", [0])
    store.transition_pair("j1", 0, P.INTERPOLATING)
    store.transition_pair("j1", 0, P.INTERPOLATED, clip_path=tmp_path / "c.mp4")
    job = store.job("j1")
    summary = status.job_summary(store, job, now=(job.started_at or 0) + 10)
    assert summary["pairs"] == {"total": 2, "interpolated": 1, "failed": 0, "crossfaded": 0}
    assert summary["eta"] == 6.7 and summary["frames"]["generated"] == 2


def test_a_reader_of_a_database_still_being_created_sees_no_jobs_yet_then_everything(tmp_path: Path) -> None:
    """`shd status` (or `--watch`) opened between the file's creation and its migrations: no jobs yet, never "no such
    table"; once the writer has made it, the same reader sees what is recorded."""
    path = tmp_path / "state" / "shd.db"
    path.parent.mkdir()
    sqlite3.connect(path).close()  # what a starting writer has made so far: the file, no schema yet
    reader = Store.open_readonly(path)
    assert reader.jobs() == [] and reader.frame_counts("j1") == {} and reader.pairs("j1") == []
    writer = Store.open(path)
    writer.create_job("j1", source_name="a.mp4", origin_path=tmp_path / "a.mp4", source_path=None,
                      work_dir=tmp_path / "w", mode="process", fps=1.0)
    assert [j.id for j in reader.jobs()] == ["j1"] and reader.schema == migrations.LATEST


def test_retry_of_a_job_at_work_with_nothing_failed_is_refused_saying_so(store: Store, tmp_path: Path) -> None:
    """`shd retry` of a job still extracting or painting, none of whose frames failed, has nothing to start again
    (it said "its failed frames start again" and exit 0); one with a failed frame starts that frame again."""
    cfg = config.from_mapping({}, tmp_path / "shd.toml")
    store.transition_job("j1", J.EXTRACTING)
    with pytest.raises(UsageError, match="job j1 is extracting and none of its frames failed; nothing to retry"):
        jobs.retry(cfg, store, "j1")
    store.transition_job("j1", J.RUNNING)
    store.add_frame("j1", 0, 0.0, tmp_path / "f0.png")
    with pytest.raises(UsageError, match="job j1 is running and none of its frames failed"):
        jobs.retry(cfg, store, "j1")
    store.transition_frame("j1", 0, F.FAILED, error="NSFW")
    assert jobs.retry(cfg, store, "j1").state == J.RUNNING
    assert store.frame("j1", 0).state == F.EXTRACTED

"""publish.py on real files: one free stem per set of files, reserved atomically, crash-safe, across file systems."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from shd import names, publish


def staged_set(folder: Path, tag: str, suffixes: tuple[str, ...] = (".mp4",)) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for suffix in suffixes:
        path = folder / f"staged{suffix or '-video'}"
        path.write_bytes(f"{tag}{suffix}".encode() * 1000)
        files[suffix] = path
    return files


def test_many_sets_published_at_the_same_instant_each_get_their_own_stem(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    sets = [staged_set(tmp_path / f"job{i}", f"job{i}", (".mp4", ".srt")) for i in range(8)]
    start = threading.Barrier(len(sets))
    results: list[dict[str, Path]] = [{} for _ in sets]

    def go(i: int) -> None:
        start.wait()
        results[i] = publish.publish(sets[i], publish.candidates(outbox, "c", [".mp4", ".srt"]), video=".mp4",
                                     journal=tmp_path / f"job{i}" / "journal")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(sets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    videos = [r[".mp4"] for r in results]
    assert sorted(p.name for p in videos) == sorted(["c.mp4"] + [f"c-{n}.mp4" for n in range(2, 9)])
    for i, r in enumerate(results):
        assert r[".mp4"].read_bytes() == sets[i][".mp4"].read_bytes()
        assert r[".srt"] == r[".mp4"].with_suffix(".srt") and r[".srt"].read_bytes() == sets[i][".srt"].read_bytes()
    assert len(list(outbox.iterdir())) == 16  # nothing else: no temp file, no sidecar without its video
    assert not any((tmp_path / f"job{i}" / "journal").exists() for i in range(len(sets)))


def test_a_clash_on_the_video_takes_back_the_sidecars_and_tries_the_next_stem(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "c.mp4").write_bytes(b"someone else's")
    files = staged_set(tmp_path / "job", "mine", (".mp4", ".srt"))
    done = publish.publish(files, publish.candidates(outbox, "c", files), video=".mp4", journal=tmp_path / "j")
    assert done == {".mp4": outbox / "c-2.mp4", ".srt": outbox / "c-2.srt"}
    assert sorted(p.name for p in outbox.iterdir()) == ["c-2.mp4", "c-2.srt", "c.mp4"]  # no c.srt left behind
    assert (outbox / "c.mp4").read_bytes() == b"someone else's"


@pytest.mark.parametrize("linked", [[".srt"], [".srt", ".mp4"]])
def test_a_publish_a_crash_interrupted_is_undone_or_finished_by_the_next_call(tmp_path: Path,
                                                                             linked: list[str]) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    files = staged_set(tmp_path / "job", "mine", (".mp4", ".srt"))
    journal = tmp_path / "job" / "journal"
    # The state a crash left: the journal names c-7, and some of the set is linked there.
    journal.write_text(str(outbox / "c-7"))
    for suffix in linked:
        os.link(files[suffix], outbox / f"c-7{suffix}")
    done = publish.publish(files, publish.candidates(outbox, "c", files), video=".mp4", journal=journal)
    if linked == [".srt", ".mp4"]:  # the video was linked last: the set was complete, it is kept where it is
        assert done[".mp4"] == outbox / "c-7.mp4"
    else:  # the lone sidecar is taken back, and the set published at the first free stem
        assert done[".mp4"] == outbox / "c.mp4"
        assert not (outbox / "c-7.srt").exists()
    assert sorted(p.name for p in outbox.iterdir()) == sorted(p.name for p in done.values())
    assert not journal.exists()


def test_across_file_systems_a_complete_copy_is_published_and_no_temporary_file_stays(
        tmp_path: Path, tmpfs) -> None:
    outbox = tmpfs(tmp_path / "outbox", "4m")
    files = staged_set(tmp_path / "job", "mine")
    (outbox / "c.mp4").write_bytes(b"taken")
    done = publish.publish(files, publish.candidates(outbox, "c", files), video=".mp4", journal=tmp_path / "j",
                           mode=0o640)
    assert done[".mp4"] == outbox / "c-2.mp4" and done[".mp4"].read_bytes() == files[".mp4"].read_bytes()
    assert os.stat(done[".mp4"]).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in outbox.iterdir()) == ["c-2.mp4", "c.mp4"]
    # A crash after the copy was linked, before the journal went: the next call knows it by its bytes.
    publish._write_journal(tmp_path / "j", outbox / "c-2")
    again = publish.publish(files, publish.candidates(outbox, "c", files), video=".mp4", journal=tmp_path / "j")
    assert again == done and sorted(p.name for p in outbox.iterdir()) == ["c-2.mp4", "c.mp4"]


def test_a_fixed_name_is_refused_when_taken_and_replaced_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "mine.mp4"
    target.write_bytes(b"precious")
    files = staged_set(tmp_path / "job", "new")
    with pytest.raises(FileExistsError) as e:
        publish.publish(files, [tmp_path / "mine"], video=".mp4", journal=tmp_path / "j")
    assert e.value.filename == str(target) and target.read_bytes() == b"precious"
    done = publish.publish(files, [tmp_path / "mine"], video=".mp4", journal=tmp_path / "j", overwrite=True)
    assert done[".mp4"] == target and target.read_bytes() == files[".mp4"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job", "mine.mp4"]


def test_candidates_fit_the_longest_suffix_in_name_max(tmp_path: Path) -> None:
    stems = publish.candidates(tmp_path, "é" * 200, [".mp4", ".prompts.csv"])
    for base in [next(stems) for _ in range(12)]:
        assert names.byte_len(base.name + ".prompts.csv") <= names.NAME_MAX
    assert base.name.endswith("-12")


@pytest.mark.parametrize("crash", [None, "before anything was replaced", "after the sidecar was replaced"])
def test_a_republish_replaces_the_set_in_place_and_a_crash_in_it_is_finished_by_the_next_call(
        tmp_path: Path, crash: str | None) -> None:
    """`shd retry` of a done job: the new set takes the old names, each file renamed over the old one once complete
    (a reader of the old video keeps reading the old, whole file), and a crash part-way is finished next time."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    old = publish.publish(staged_set(tmp_path / "first", "old", (".mp4", ".srt")),
                          publish.candidates(outbox, "c", [".mp4", ".srt"]), video=".mp4", journal=tmp_path / "j1")
    new = staged_set(tmp_path / "job", "new", (".mp4", ".srt"))
    journal = tmp_path / "job" / "journal"
    if crash is not None:  # the state a crash left: the journal names the stem; maybe the sidecar is new already
        journal.write_text(str(outbox / "c"))
        if crash == "after the sidecar was replaced":
            os.unlink(outbox / "c.srt")
            os.link(new[".srt"], outbox / "c.srt")
    with old[".mp4"].open("rb") as reader:
        done = publish.republish(new, outbox / "c", video=".mp4", journal=journal)
        assert reader.read() == b"old.mp4" * 1000  # the old file was replaced whole, never rewritten in place
    assert done == {".mp4": outbox / "c.mp4", ".srt": outbox / "c.srt"}
    assert done[".mp4"].read_bytes() == new[".mp4"].read_bytes()
    assert done[".srt"].read_bytes() == new[".srt"].read_bytes()
    assert sorted(p.name for p in outbox.iterdir()) == ["c.mp4", "c.srt"] and not journal.exists()


def test_an_interrupted_publish_of_a_set_made_again_is_undone_not_left_behind(tmp_path: Path) -> None:
    """A crash after some of a set's files got their names, then the set is thrown away to be made again (a
    canceled job retried): `abandon` takes back what is ours under the journal's stem and nothing else."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "d.srt").write_bytes(b"another job's")
    files = staged_set(tmp_path / "job", "mine", (".mp4", ".srt", ".vtt"))
    journal = tmp_path / "job" / "journal"
    publish._write_journal(journal, outbox / "c")
    os.link(files[".srt"], outbox / "c.srt")  # the crash came here
    (outbox / "c.vtt").write_bytes(b"not ours")
    publish.abandon(files, journal)
    assert sorted(p.name for p in outbox.iterdir()) == ["c.vtt", "d.srt"] and not journal.exists()
    publish.abandon(files, journal)  # nothing to undo any more

"""Publishing a job's finished files: one free name reserved atomically for the whole set, never overwriting.

A job publishes a *set* of files that share a stem and differ by suffix: today the video alone (`.mp4`), later
its sidecars too (`<stem>.prompts.csv`, `.srt`, ...). `publish()` takes the first candidate stem under which no
file of the set exists yet and puts every file there:

* each file is hard-linked to its final name, and `os.link` fails rather than replace an existing name, so two
  jobs finishing at the same moment can never be given the same name;
* the video comes last, so a video never appears without its sidecars; on a clash everything linked under that
  stem is unlinked again (no sidecar is left without its video) and the next stem is tried;
* where the outbox is on another file system, a file is first copied beside its final name under a hidden
  temporary name (`.shd-<hex>.part`, fsynced), then linked from there the same way;
* the stem being tried is written to a journal (a file of the caller's, in the job folder) before anything is
  linked. A publish interrupted by a crash is finished or undone by the next call with the same files: all of them
  in place under the journal's stem means done; otherwise what is ours there is unlinked and the walk starts over.
  "Ours" means the very file we staged (same inode) or, after a copy, the same size and bytes.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from shd import names, testpoints


def candidates(folder: Path, stem: str, suffixes: Iterable[str]) -> Iterator[Path]:
    """`folder/stem`, `folder/stem-2`, `folder/stem-3`, ... without end, each stem shortened so that the name with
    any of `suffixes` fits in NAME_MAX."""
    longest_suffix = max(names.byte_len(s) for s in suffixes)
    n = 1
    while True:
        tail = "" if n == 1 else f"-{n}"
        yield folder / (names.shorten(stem, names.NAME_MAX - longest_suffix - names.byte_len(tail)) + tail)
        n += 1


def publish(staged: Mapping[str, Path], bases: Iterable[Path], *, video: str, journal: Path,
            overwrite: bool = False, mode: int | None = None) -> dict[str, Path]:
    """Publish `staged` (suffix -> finished file; `video` is the video's suffix) under the first base of `bases`
    (paths without a suffix) where none of the set's names exists, or under the first base, replacing what is there,
    with `overwrite`. `mode`: the published files' permissions. Returns suffix -> published path.

    Idempotent and crash-safe through `journal` (see the module docstring); the staged files stay where they are.
    Raises FileExistsError naming the video's name under the last base if every base was taken (only a finite
    `bases` can be exhausted), OSError (ENOSPC...) if a copy fails; nothing half-published is left behind.
    """
    order = sorted(s for s in staged if s != video) + [video]
    if mode is not None:
        for path in staged.values():
            os.chmod(path, mode)
    done = _recover(staged, journal)
    if done is not None:
        return done
    taken: Path | None = None
    for base in bases:
        targets = _targets(staged, base)
        _write_journal(journal, base)
        linked: list[Path] = []
        try:
            for suffix in order:
                _place(staged[suffix], targets[suffix], overwrite=overwrite)
                linked.append(targets[suffix])
                if len(linked) == 1 < len(order):
                    testpoints.reached("publish-partial")
        except FileExistsError:
            taken = targets[video]
            for path in linked:
                path.unlink(missing_ok=True)
            continue
        except BaseException:
            for path in linked:
                path.unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
            raise
        _fsync_dir(base.parent)
        testpoints.reached("publish-placed")
        journal.unlink(missing_ok=True)
        return targets
    journal.unlink(missing_ok=True)
    raise FileExistsError(errno.EEXIST, "already exists", str(taken))


def republish(staged: Mapping[str, Path], base: Path, *, video: str, journal: Path,
              mode: int | None = None) -> dict[str, Path]:
    """Publish `staged` again under the stem `base` of an earlier publish (`shd retry` of a done job): each file
    replaces the one of its name atomically (a complete copy under a temporary name, then a rename), so the old
    file stays whole and readable until the new one takes its place; the video comes last. Crash-safe through
    `journal` as `publish()` is: the next call finishes the set. A name that no longer exists is simply created."""
    return publish(staged, [base], video=video, journal=journal, overwrite=True, mode=mode)


def abandon(staged: Mapping[str, Path], journal: Path) -> None:
    """Undo an interrupted publish of `staged` without finishing it (the set will be made again): what is ours
    under the journal's stem is unlinked, and the journal goes. Nothing to do without a journal."""
    try:
        base = Path(journal.read_text(encoding="utf-8", errors="surrogateescape"))
    except FileNotFoundError:
        return
    for suffix, target in _targets(staged, base).items():
        if _is_ours(staged[suffix], target):
            target.unlink(missing_ok=True)
    journal.unlink(missing_ok=True)


def withdraw(published: Mapping[str, Path], staged: Mapping[str, Path], *, video: str) -> None:
    """Take back a set `publish()` just published (suffix -> path): each name that is still ours is unlinked, the
    video (suffix `video`) first, so no video is left without its sidecars."""
    for suffix in [video, *sorted(s for s in published if s != video)]:
        if suffix in published and suffix in staged and _is_ours(staged[suffix], published[suffix]):
            published[suffix].unlink(missing_ok=True)


def _targets(staged: Mapping[str, Path], base: Path) -> dict[str, Path]:
    return {suffix: base.with_name(base.name + suffix) for suffix in staged}


def _recover(staged: Mapping[str, Path], journal: Path) -> dict[str, Path] | None:
    """Finish (return the targets) or undo (unlink what is ours, return None) a publish a crash interrupted."""
    try:
        base = Path(journal.read_text(encoding="utf-8", errors="surrogateescape"))
    except FileNotFoundError:
        return None
    targets = _targets(staged, base)
    ours = [target for suffix, target in targets.items() if _is_ours(staged[suffix], target)]
    if len(ours) == len(targets):
        journal.unlink()
        return targets
    for target in ours:
        target.unlink()
    journal.unlink()
    return None


def _is_ours(staged: Path, target: Path) -> bool:
    try:
        if os.path.samefile(staged, target):
            return True
        return target.stat().st_size == staged.stat().st_size and filecmp.cmp(staged, target, shallow=False)
    except FileNotFoundError:
        return False


def _place(src: Path, dest: Path, *, overwrite: bool) -> None:
    """Give `src` the name `dest`: a hard link when both are on one file system, else a complete copy first.
    FileExistsError if `dest` exists, unless `overwrite` (then it is replaced atomically)."""
    if not overwrite:
        try:
            os.link(src, dest)
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
    # Replacing, or another file system: a complete file under a temporary name beside `dest` first. The name is
    # derived from `src`, so a temporary file a crash left behind is found and replaced by the next try.
    tmp = dest.with_name(f".shd-{hashlib.sha256(os.fsencode(src)).hexdigest()[:16]}.part")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            _copy(src, tmp)
        if overwrite:
            os.replace(tmp, dest)
        else:
            os.link(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _copy(src: Path, dest: Path) -> None:
    """Copy `src` to the new file `dest` (same permissions), flushed to the disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(dest, flags, src.stat().st_mode & 0o777)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(dest, src.stat().st_mode & 0o777)  # the umask may have taken bits away


def _write_journal(journal: Path, base: Path) -> None:
    tmp = journal.with_name(journal.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(str(base))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, journal)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

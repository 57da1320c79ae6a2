"""Who may read what shd writes, whatever the umask it was started with.

`make_private()` (called once by the CLI, before anything is written) sets the process umask to 077, so that every
folder shd (or ffmpeg, which inherits it) creates is 0700 and every file 0600: the database, frames, painted
images, logs of failures. Published outputs are meant for people: `output_mode()` gives them the mode the starting
umask allowed, minus every permission for others (under the unit's UMask=0027: 0640, readable by group shd).
"""

from __future__ import annotations

import os
from pathlib import Path

from shd.errors import ConfigError

PRIVATE_UMASK = 0o077
_NOT_FOR_OTHERS = 0o007

_started_with: int | None = None


def make_private() -> None:
    """Remember the umask shd was started with and make every file shd creates from now on private."""
    global _started_with
    previous = os.umask(PRIVATE_UMASK)
    if _started_with is None:
        _started_with = previous


def starting_umask() -> int:
    """The umask shd was started with (the current one if `make_private` was not called)."""
    if _started_with is not None:
        return _started_with
    current = os.umask(0)
    os.umask(current)
    return current


def output_mode() -> int:
    """The mode of a published file: what the starting umask allows for a new file, never anything for others."""
    return 0o666 & ~(starting_umask() | _NOT_FOR_OTHERS)


def folder_mode() -> int:
    """The mode of a folder shd creates for people (inbox, outbox): what the starting umask allows."""
    return 0o777 & ~starting_umask()


def make_folder(path: Path) -> None:
    """Create a folder for people (and its missing parents) with `folder_mode()`; an existing one is left as it
    is."""
    if path.is_dir():
        return
    if not path.parent.exists():
        make_folder(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        if path.is_dir():  # made meanwhile by someone else
            return
        raise
    path.chmod(folder_mode())  # mkdir applied the private umask; this folder is for people


def make_configured_folder(what: str, folder: Path) -> None:
    """`make_folder` for the configured inbox or outbox (`what`): ConfigError naming it (exit 2) if the path cannot
    be a folder (a file is in the way, no permission)."""
    try:
        make_folder(folder)
    except OSError as e:
        raise not_a_folder(what, folder, e) from None


def not_a_folder(what: str, folder: Path, e: OSError) -> ConfigError:
    """The ConfigError (exit 2) for a configured folder, `paths.<what>`, that could not be made (`e`)."""
    why = "a file is in the way" if isinstance(e, FileExistsError) else (e.strerror or str(e))
    return ConfigError(folder, [f"cannot be the {what} folder ({why}); see paths.{what}"])

"""PURE: file names shd derives from a user's file name, made to fit the file system and the terminal.

Linux allows any byte but '/' and NUL in a name of up to NAME_MAX (255) bytes. A name shd makes from one of those
(an output `<stem>-2.mp4`, a sidecar `<name>.error.txt`) can be longer than the name it comes from, so it is
shortened, at a character boundary, until it fits. Lengths are counted in the bytes the file system stores
(`os.fsencode`: UTF-8, with undecodable bytes kept as they were).
"""

from __future__ import annotations

import os
import unicodedata

NAME_MAX = 255


def byte_len(text: str) -> int:
    """How many bytes `text` takes as a file name."""
    return len(os.fsencode(text))


def shorten(text: str, max_bytes: int) -> str:
    """`text` cut at a character boundary so that it takes at most `max_bytes` bytes as a file name."""
    if byte_len(text) <= max_bytes:
        return text
    out, used = [], 0
    for ch in text:
        n = byte_len(ch)
        if used + n > max_bytes:
            break
        out.append(ch)
        used += n
    return "".join(out)


def fit(stem: str, suffix: str) -> str:
    """`stem + suffix`, the stem shortened if the whole would not fit in NAME_MAX bytes."""
    return shorten(stem, NAME_MAX - byte_len(suffix)) + suffix


def sidecar(name: str, suffix: str) -> str:
    """The name of a file that goes beside `name` (e.g. `.error.txt`): `name + suffix`, `name` shortened if need
    be. It always starts with as much of `name` as fits."""
    return fit(name, suffix)


def storable(name: str) -> str:
    """`name` as text the store can hold: bytes that are not UTF-8 (kept by Python as lone surrogates) become
    U+FFFD. Names that are valid UTF-8 are returned unchanged."""
    return os.fsencode(name).decode("utf-8", errors="replace")


def printable(text: str) -> str:
    """`text` on one line: control and format characters (newline, tab, ...) shown as escapes like `\\n`."""
    if text.isprintable():
        return text
    return "".join(
        repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch for ch in text)

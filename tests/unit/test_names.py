"""Names shd derives from a user's file name fit NAME_MAX, cut at character boundaries, and print on one line."""

import os

import pytest

from shd import names


@pytest.mark.parametrize("stem", ["a" * 300, "é" * 200, "日本" * 100, "a" + "é" * 200])
def test_fit_keeps_whole_characters_and_never_passes_name_max(stem: str) -> None:
    name = names.fit(stem, ".error.txt")
    assert names.byte_len(name) <= names.NAME_MAX
    assert name.endswith(".error.txt") and stem.startswith(name[: -len(".error.txt")])
    os.fsencode(name).decode("utf-8")  # no character was cut in half


def test_a_name_that_fits_is_left_alone() -> None:
    assert names.fit("clip", ".mp4") == "clip.mp4"
    assert names.sidecar("a" * 245, ".error.txt") == "a" * 245 + ".error.txt"  # exactly 255 bytes
    assert names.sidecar("a" * 251 + ".mp4", ".error.txt") == "a" * 245 + ".error.txt"


def test_names_that_are_not_utf8_are_measured_in_their_own_bytes_and_stored_readably() -> None:
    raw = os.fsdecode(b"caf\xe9.mp4")  # Latin-1, as an old system wrote it
    assert names.byte_len(raw) == 8
    assert names.storable(raw) == "caf\ufffd.mp4"
    assert names.storable("café.mp4") == "café.mp4"


def test_printable_puts_control_characters_on_one_line() -> None:
    assert names.printable("two\nlines\t.mp4") == "two\\nlines\\t.mp4"
    assert names.printable("café 日本 'q' \"dq\".mp4") == "café 日本 'q' \"dq\".mp4"
    assert "\n" not in names.printable("a\r\n\x1b[31mred\u2028")

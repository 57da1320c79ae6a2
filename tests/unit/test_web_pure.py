"""The web page's pure parts: the [web] listen address, byte ranges, the thumbnail command, and the redraw of
`shd status --watch`."""

from pathlib import Path

import pytest

from shd.config import is_loopback, parse_listen
from shd.status_watch import CLEAR_DOWN, CLEAR_EOL, HOME, screen
from shd.web.files import parse_range, plan_thumbnail


def test_listen_addresses() -> None:
    assert parse_listen("") is None
    assert parse_listen("127.0.0.1:8787") == ("127.0.0.1", 8787)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("localhost:80") == ("localhost", 80)
    assert parse_listen("0.0.0.0:8787") == ("0.0.0.0", 8787)
    for bad in ("127.0.0.1", ":8787", "::1:8787", "[127.0.0.1]:80", "127.0.0.1:65536", "example.com:80",
                "127.0.0.1:-1", "127.0.0.1:80x"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.9.9.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("::")


def test_byte_ranges() -> None:
    assert parse_range(None, 1000) is None
    assert parse_range("bytes=0-99", 1000) == (0, 99)
    assert parse_range("bytes=900-", 1000) == (900, 999)
    assert parse_range("bytes=900-5000", 1000) == (900, 999)
    assert parse_range("bytes=-100", 1000) == (900, 999)
    assert parse_range("bytes=-5000", 1000) == (0, 999)
    assert parse_range("bytes=1000-", 1000) is False
    assert parse_range("bytes=5-4", 1000) is False
    assert parse_range("bytes=-0", 1000) is False
    assert parse_range("bytes=0-1,5-6", 1000) is None  # several ranges: the whole file
    assert parse_range("items=0-1", 1000) is None


def test_the_thumbnail_command_scales_down_only_and_writes_one_jpeg() -> None:
    argv = plan_thumbnail("ffmpeg", Path("/j/frames/000001.png"), Path("/j/thumbs/.x.part"))
    assert argv[0] == "ffmpeg" and argv[argv.index("-i") + 1] == "/j/frames/000001.png"
    assert argv[argv.index("-vf") + 1] == "scale='min(320,iw)':-2"
    assert argv[argv.index("-frames:v") + 1] == "1" and argv[argv.index("-f") + 1] == "mjpeg"
    assert argv[-1] == "/j/thumbs/.x.part"


def test_a_redraw_fits_the_terminal_and_clears_what_was_there() -> None:
    table = "\n".join(f"row {i} " + "x" * 100 for i in range(30))
    out = screen(table, "shd status", width=40, height=10)
    assert out.startswith(HOME) and out.endswith(CLEAR_DOWN)
    lines = out[len(HOME):-len(CLEAR_DOWN)].split("\n")[:-1]
    assert len(lines) == 9 and all(ln.endswith(CLEAR_EOL) for ln in lines)  # the 10th row: the cursor's
    assert all(len(ln) - len(CLEAR_EOL) <= 40 for ln in lines)
    assert lines[0].startswith("shd status") and lines[2].startswith("row 0")
    assert "24 more line(s)" in lines[-1]
    small = screen("a\nb", "h", width=80, height=24)
    assert small == HOME + f"h{CLEAR_EOL}\n{CLEAR_EOL}\na{CLEAR_EOL}\nb{CLEAR_EOL}\n" + CLEAR_DOWN

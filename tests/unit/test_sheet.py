"""The contact sheet, pure: which seconds it shows, its size, and its labels drawn with the built-in font."""

import zlib

import pytest

from shd import png, sheet


def test_every_frame_up_to_the_limit_then_an_even_sample_from_first_to_last() -> None:
    assert sheet.sample(5) == [0, 1, 2, 3, 4]
    picked = sheet.sample(1000)
    assert len(picked) == sheet.MAX_CELLS and picked[0] == 0 and picked[-1] == 999
    assert picked == sorted(set(picked))
    gaps = {b - a for a, b in zip(picked, picked[1:])}
    assert max(gaps) - min(gaps) <= 1


@pytest.mark.parametrize("count, columns, rows", [(1, 1, 1), (3, 3, 1), (4, 4, 1), (5, 4, 2), (48, 4, 12)])
def test_the_sheet_size_follows_the_count(count, columns, rows) -> None:
    lay = sheet.layout(count, 4 / 3)
    assert (lay.columns, lay.rows) == (columns, rows)
    assert lay.picture == (192, 144)
    cell_w, cell_h = 2 * 192 + sheet.GAP, 144 + sheet.LABEL_HEIGHT
    assert lay.size == (2 * sheet.MARGIN + columns * cell_w + (columns - 1) * sheet.PADDING,
                        2 * sheet.MARGIN + rows * cell_h + (rows - 1) * sheet.PADDING)
    assert lay.size[0] <= 1600 and lay.size[1] <= 2100  # bounded, however long the video


def test_pictures_keep_their_shape_within_the_box() -> None:
    assert sheet.layout(1, 16 / 9).picture == (192, 108)
    assert sheet.layout(1, 9 / 16).picture == (80, 144)
    with pytest.raises(ValueError):
        sheet.layout(sheet.MAX_CELLS + 1, 1.0)


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (5, "0:05"), (61.5, "1:01.5"), (3725, "1:02:05")])
def test_time_labels(seconds, text) -> None:
    assert sheet.time_label(seconds) == text


def _pixels(data: bytes) -> list[bytes]:
    width, height = png.size(data) or (0, 0)
    idat = b"".join(data[i + 8:i + 8 + int.from_bytes(data[i:i + 4], "big")]
                    for i in range(8, len(data)) if data[i + 4:i + 8] == b"IDAT")
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    return [raw[y * stride + 1:(y + 1) * stride] for y in range(height)]


def test_a_label_is_a_strip_with_the_text_in_ink_and_red_when_filled() -> None:
    data = sheet.label("1:05", 100)
    assert png.size(data) == (100, sheet.LABEL_HEIGHT)
    rows = _pixels(data)
    ink = bytes(sheet.INK)
    inked = {(x // 3, y) for y, row in enumerate(rows) for x in range(0, len(row), 3) if row[x:x + 3] == ink}
    # "1" "0" "5" and ":" drawn at SCALE: 3x5 glyph pixels each, the colon two
    per_glyph = {"1": 8, ":": 2, "0": 12, "5": 11}
    assert len(inked) == sum(per_glyph.values()) * sheet.SCALE ** 2
    assert rows[0][:3] == bytes(sheet.LABEL_COLOURS[False])
    assert _pixels(sheet.label("0:00", 50, filled=True))[0][:3] == bytes(sheet.LABEL_COLOURS[True])

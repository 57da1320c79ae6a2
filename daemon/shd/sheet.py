"""PURE: the contact sheet `<stem>.sheet.png`: which seconds it shows, its layout, its labels and its ffmpeg command.

One cell per frame: the source frame and the painting in its slot side by side (each fitted into `BOX`), over a
strip with the frame's time (a red strip where a frame failed and another picture stands in), `COLUMNS` cells a row.
A sheet is bounded: at most `MAX_CELLS` cells (about 1.6 x 2 thousand pixels). A longer video gets one sampled
sheet: `MAX_CELLS` frames spread evenly from the first to the last, each labelled with its time.
The time is drawn with a 3x5 pixel font built in here and written as PNG (png.py): no font file, no `drawtext`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python

from shd import png

MAX_CELLS = 48
COLUMNS = 4
BOX = (192, 144)    # each picture is scaled to fit this
GAP = 4             # between the source and the painting
LABEL_HEIGHT = 16
PADDING = 6         # between cells
MARGIN = 8          # around the sheet
BACKGROUND = "0x202020"
SCALE = 2           # font pixels per glyph pixel
LABEL_COLOURS = {False: (56, 56, 56), True: (150, 30, 30)}  # strip colour: painted, filled
INK = (235, 235, 235)

# 3x5 glyphs, one string per row, "#" a pixel.
GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
    ":": ("...", ".#.", "...", ".#.", "..."), ".": ("...", "...", "...", "...", ".#."),
    " ": ("...", "...", "...", "...", "..."),
}


@dataclass(frozen=True)
class Layout:
    """A sheet of `count` cells, `columns` a row, each picture `picture` (width, height)."""

    count: int
    columns: int
    picture: tuple[int, int]

    @property
    def rows(self) -> int:
        return -(-self.count // self.columns)

    @property
    def cell(self) -> tuple[int, int]:
        w, h = self.picture
        return 2 * w + GAP, h + LABEL_HEIGHT

    @property
    def size(self) -> tuple[int, int]:
        """The sheet's width and height in pixels."""
        (cw, ch), c, r = self.cell, self.columns, self.rows
        return 2 * MARGIN + c * cw + (c - 1) * PADDING, 2 * MARGIN + r * ch + (r - 1) * PADDING


def sample(frames: int, limit: int = MAX_CELLS) -> list[int]:
    """The frames the sheet shows: all of them, or `limit` spread evenly from the first to the last."""
    if frames <= limit:
        return list(range(frames))
    return [round(k * (frames - 1) / (limit - 1)) for k in range(limit)]


def layout(count: int, aspect: float) -> Layout:
    """The layout for `count` cells (1 to MAX_CELLS) of pictures `aspect` (width / height) wide."""
    if not 1 <= count <= MAX_CELLS:
        raise ValueError(f"a sheet has 1 to {MAX_CELLS} cells, not {count}")
    bw, bh = BOX
    if aspect >= bw / bh:
        picture = (bw, max(2, round(bw / aspect / 2) * 2))
    else:
        picture = (max(2, round(bh * aspect / 2) * 2), bh)
    return Layout(count, min(count, COLUMNS), picture)


def time_label(seconds: float) -> str:
    """`m:ss` (or `h:mm:ss`), with tenths when the time is not a whole second."""
    tenths = round(seconds * 10)
    s, t = divmod(tenths, 10)
    text = f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    return text + (f".{t}" if t else "")


def label(text: str, width: int, *, filled: bool = False) -> bytes:
    """A `width` x LABEL_HEIGHT PNG strip with `text` (digits, ':', '.', ' ') in the built-in font, left-aligned."""
    bg, ink = bytes(LABEL_COLOURS[filled]), bytes(INK)
    rows = [bytearray(bg * width) for _ in range(LABEL_HEIGHT)]
    top, x = (LABEL_HEIGHT - 5 * SCALE) // 2, 4
    for ch in text:
        glyph = GLYPHS[ch]
        for gy, line in enumerate(glyph):
            for gx, pixel in enumerate(line):
                if pixel != "#":
                    continue
                for dy in range(SCALE):
                    for dx in range(SCALE):
                        px = x + gx * SCALE + dx
                        if px < width:
                            rows[top + gy * SCALE + dy][3 * px:3 * px + 3] = ink
        x += 4 * SCALE
    return png.encode(width, LABEL_HEIGHT, [bytes(r) for r in rows])


def plan(ffmpeg: str, sources: Path, paintings: Path, labels: Path, out: Path, lay: Layout,
         global_args: Sequence[str]) -> list[str]:
    """Tile ``sources/NNNNNN.png`` and ``paintings/NNNNNN.png`` side by side over ``labels/NNNNNN.png`` into one
    PNG `out` of `lay.size`. Pictures of any size or pixel format may be mixed: each input is scaled first, and its
    graph is not rebuilt when a picture differs (a rebuild would lose the tiles so far)."""
    w, h = lay.picture

    def picture(folder: Path) -> Any:
        stream = ffmpeg_python.input(str(folder / "%06d.png"), f="image2", start_number=0, reinit_filter=0)
        stream = stream.filter("scale", w, h, force_original_aspect_ratio="decrease")
        stream = stream.filter("pad", w, h, "(ow-iw)/2", "(oh-ih)/2", eval="frame")  # centred, whatever comes
        return stream.filter("setsar", 1).filter("format", "rgb24")

    left = picture(sources).filter("pad", w + GAP, h, 0, 0)
    pair = ffmpeg_python.filter([left, picture(paintings)], "hstack")
    strip = ffmpeg_python.input(str(labels / "%06d.png"), f="image2", start_number=0).filter("format", "rgb24")
    cell = ffmpeg_python.filter([pair, strip], "vstack")
    tiles = cell.filter("tile", f"{lay.columns}x{lay.rows}", padding=PADDING, margin=MARGIN, color=BACKGROUND)
    stream = tiles.output(str(out), vframes=1, f="image2", update=1)
    argv: list[str] = ffmpeg_python.compile(stream, cmd=[ffmpeg, *global_args])
    return argv

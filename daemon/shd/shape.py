"""PURE: the shape of the pictures: a source's display size, and the size SDXL paints at.

* A video may store its picture in pixels that are not square (its sample aspect ratio, SAR): a 176x144 clip with
  SAR 128:117 is shown 4:3. `display_size` applies it, so frames, paintings and the output keep the shape the
  source is seen in.
* SDXL was trained on sizes of about one megapixel in multiples of 64 (1024x1024, 1152x896, 1216x832, 1344x768,
  1536x640 and their transposes); a painting of another shape than the video ends up between bars or cropped.
  `painting_size` picks the multiple-of-64 size of at most one megapixel (each side 512 to 2048) that best fits a
  display aspect ratio, a close shape counting for more than a larger area: 4:3 gets the first version's
  1024x768, 16:9 1344x768, 1:1 1024x1024, 9:16 768x1344.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

MAX_PIXELS = 1024 * 1024
STEP = 64
SIDES = range(512, 2048 + 1, STEP)
AREA_WEIGHT = 0.08  # how much a smaller area counts against a closer shape (both measured as log ratios)


def display_size(width: int, height: int, sar: tuple[int, int]) -> tuple[int, int]:
    """The size a `width` x `height` picture with sample aspect ratio `sar` is shown at, in square pixels: the
    width scaled by the SAR and rounded to an even number, the height kept. An unknown SAR (0:1) counts as 1:1."""
    num, den = sar
    if num <= 0 or den <= 0 or num == den:
        return width, height
    return max(2, round(width * num / den / 2) * 2), height


@lru_cache(maxsize=64)
def painting_size(aspect: float) -> tuple[int, int]:
    """The SDXL-friendly (width, height) for a picture `aspect` = width / height wide (see the module docstring)."""
    if not aspect > 0:
        raise ValueError(f"aspect ratio must be > 0, not {aspect}")

    def cost(size: tuple[int, int]) -> tuple[float, int]:
        w, h = size
        return abs(math.log(w / h / aspect)) + AREA_WEIGHT * math.log(MAX_PIXELS / (w * h)), -w * h

    return min(((w, h) for w in SIDES for h in SIDES if w * h <= MAX_PIXELS), key=cost)


def painting_for(configured: Mapping[str, Any], display: tuple[int, int]) -> tuple[int, int]:
    """The painting's size for a source shown at `display`: `width` and `height` from the configured model inputs
    when both are given; one of them alone keeps the display's shape for the other (a multiple of 64); neither:
    `painting_size` of the display's shape."""
    w, h = configured.get("width"), configured.get("height")
    aspect = display[0] / display[1]
    if w is not None and h is not None:
        return int(w), int(h)
    if w is not None:
        return int(w), max(STEP, round(int(w) / aspect / STEP) * STEP)
    if h is not None:
        return max(STEP, round(int(h) * aspect / STEP) * STEP), int(h)
    return painting_size(round(aspect, 4))

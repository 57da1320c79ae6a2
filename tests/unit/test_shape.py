"""The painting's shape, pure: a source's display size and the SDXL size chosen for it."""

import pytest

from shd import shape


@pytest.mark.parametrize("size, sar, shown", [
    ((176, 144), (128, 117), (192, 144)),   # QCIF with non-square pixels: shown 4:3
    ((720, 480), (8, 9), (640, 480)),        # NTSC 4:3
    ((720, 576), (64, 45), (1024, 576)),     # PAL 16:9 anamorphic
    ((160, 120), (1, 1), (160, 120)),
    ((160, 120), (0, 1), (160, 120)),        # unknown: as stored
])
def test_display_size_applies_the_sample_aspect_ratio_to_the_width(size, sar, shown) -> None:
    assert shape.display_size(*size, sar) == shown


@pytest.mark.parametrize("aspect, painted", [
    (4 / 3, (1024, 768)),          # the first version's size, exactly
    (1408 / 1053, (1024, 768)),    # 176x144 at SAR 128:117
    (16 / 9, (1344, 768)),
    (9 / 16, (768, 1344)),
    (1.0, (1024, 1024)),
    (3 / 2, (1152, 768)),
    (2.39, (1536, 640)),
    (10.0, (2048, 512)),           # as wide as SDXL goes; the fit does the rest
])
def test_painting_size_is_an_sdxl_size_near_one_megapixel_closest_to_the_shape(aspect, painted) -> None:
    w, h = shape.painting_size(aspect)
    assert (w, h) == painted
    assert w % 64 == 0 and h % 64 == 0 and w * h <= 1024 * 1024


def test_every_shape_gets_a_size_within_sdxls_range() -> None:
    for tenths in range(2, 60):
        w, h = shape.painting_size(tenths / 10)
        assert 512 <= w <= 2048 and 512 <= h <= 2048 and w * h <= 1024 * 1024


def test_a_configured_width_and_height_win_and_one_alone_keeps_the_shape() -> None:
    assert shape.painting_for({"width": 640, "height": 640}, (1920, 1080)) == (640, 640)
    assert shape.painting_for({"width": 1024}, (1920, 1080)) == (1024, 576)
    assert shape.painting_for({"height": 768}, (1920, 1080)) == (1344, 768)
    assert shape.painting_for({"num_outputs": 1}, (192, 144)) == (1024, 768)

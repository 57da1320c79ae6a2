"""The live progress line of `shd process`: its text, and log lines printed above it (a StringIO for a terminal)."""

import io

from shd.progress import CLEAR, LiveLine, line


def summary(**kw):
    d = {"source": "clip.mp4", "state": "running", "elapsed": 73.2, "eta": 95.1,
         "frames": {"total": 141, "extracted": 141, "prompted": 80, "generated": 61, "failed": 1}}
    d.update(kw)
    return d


def test_the_line_says_painted_of_total_failed_elapsed_and_eta() -> None:
    assert line(summary(), 200) == "clip.mp4: 61/141 painted, 1 failed, 1:13 elapsed, ETA 1:35"
    assert line(summary(state="stitching", eta=None), 200) == "clip.mp4: 61/141 painted, 1 failed, stitching, " \
                                                              "1:13 elapsed"
    assert line(summary(source="a\nb.mp4", elapsed=3700.0, eta=None), 200).startswith("a\\nb.mp4: ")
    assert "1:01:40 elapsed" in line(summary(elapsed=3700.0), 200)


def test_the_line_fits_the_terminal() -> None:
    text = line(summary(), 30)
    assert len(text) < 30 and text.endswith("…")


def test_log_lines_go_above_the_line_which_is_redrawn() -> None:
    out = io.StringIO()
    live = LiveLine(out)
    live.show(summary())
    shown = line(summary(), live._width())
    live.write("a warn")
    assert out.getvalue() == CLEAR + shown  # half a line waits for its end
    live.write("ing\n")
    assert out.getvalue() == CLEAR + shown + CLEAR + "a warning\n" + shown
    live.close()
    assert out.getvalue().endswith(shown + "\n")

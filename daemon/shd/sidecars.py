"""PURE: the text files beside every output: `<stem>.prompts.csv`, `<stem>.srt` and `<stem>.vtt`.

* prompts.csv, one row per frame, in order. First the first version's two columns: `filename` (the frame's name as
  the first version's `ffmpeg -vf fps=1 output/output_%04d.png` named it: output_0001.png for the first) and
  `prompt`; then `time` (seconds into the source), `seed`, `state` (generated or failed), `filled_with` (what stood
  in for a frame that failed) and `error`. RFC 4180 quoting (a prompt with a comma or a quote stays one field),
  UTF-8, CRLF line ends.
* .srt and .vtt: one cue per stretch of the video that shows one painting, timed as the video shows it, with the
  prompt it was painted from (a slot held by an earlier painting extends that painting's cue; a slot showing the
  source frame has none). WebVTT escapes `&`, `<` and `>` as its spec says. SRT has no escapes, and players read
  `<b>`, `{\\an8}` or `\\N` in it as markup; so a U+2060 WORD JOINER (invisible) follows every `<`, `{` and `\\`
  (and splits `-->`), which keeps the prompt's text literal in players and in the mp4's subtitle track made from it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shd.fill import Slot

WORD_JOINER = "\u2060"
CSV_COLUMNS = ("filename", "prompt", "time", "seed", "state", "filled_with", "error")


class FrameFacts(Protocol):
    """What the sidecars read of a frame (shd.store.Frame has it)."""

    @property
    def idx(self) -> int: ...
    @property
    def ts(self) -> float: ...
    @property
    def state(self) -> str: ...
    @property
    def prompt(self) -> str | None: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def filled_with(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True)
class Cue:
    """`text` is on screen from `start` to `end` seconds."""

    start: float
    end: float
    text: str


def first_version_name(idx: int) -> str:
    """Frame `idx` (0-based) as the first version's extraction named it."""
    return f"output_{idx + 1:04d}.png"


def prompts_csv(frames: Sequence[FrameFacts]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for f in frames:
        writer.writerow([first_version_name(f.idx), f.prompt or "", f"{f.ts:.3f}",
                         "" if f.seed is None else f.seed, f.state, f.filled_with or "", f.error or ""])
    return out.getvalue()


def cues(frames: Sequence[FrameFacts], slots: Sequence[Slot], duration: float) -> list[Cue]:
    """The cues of a video whose slot i (from frame i's time to the next frame's, the last to `duration`) shows
    `slots[i]`. Consecutive slots showing the same painting make one cue; nothing starts at or after `duration`."""
    found: list[tuple[int, Cue]] = []  # (painted frame, cue)
    for slot in slots:
        start = frames[slot.index].ts
        end = min(frames[slot.index + 1].ts if slot.index + 1 < len(frames) else duration, duration)
        prompt = frames[slot.from_index].prompt
        if slot.kind != "generated" or not prompt or start >= end:
            continue
        if found and found[-1][0] == slot.from_index and found[-1][1].end == start:
            found[-1] = (slot.from_index, Cue(found[-1][1].start, end, prompt))
        else:
            found.append((slot.from_index, Cue(start, end, prompt)))
    return [cue for _, cue in found]


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def srt_text(text: str) -> str:
    """`text` as SRT cue text that every player shows literally (see the module docstring)."""
    for mark in ("\\", "<", "{"):
        text = text.replace(mark, mark + WORD_JOINER)
    return text.replace("-->", "--" + WORD_JOINER + ">")


def vtt_text(text: str) -> str:
    """`text` as WebVTT cue text: `&`, `<` and `>` as character references."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a blank line would end the cue


def srt(cue_list: Sequence[Cue]) -> str:
    return "".join(f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{srt_text(_one_line(c.text))}\n\n"
                   for n, c in enumerate(cue_list, 1))


def vtt(cue_list: Sequence[Cue]) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{vtt_text(_one_line(c.text))}\n\n"
                                  for c in cue_list)

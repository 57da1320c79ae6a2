"""PURE: what a prediction costs, and what a video is expected to cost, in dollars. No I/O.

Replicate has no cost field and no spend API (../shared/docs/outputs-cost-ops.md §3): a public model is billed per
second of `metrics.predict_time` on its hardware, some official models per output instead. So shd prices each
finished prediction itself, `cost(price, predict_time, outputs)`, at the price in force when it finished.

Prices are per model (`owner/name`, or `owner/name:version` for one version), from `DEFAULT_PRICES` below, overridden
field by field by the config's `[prices."owner/name"]` tables. A model's price is one line in `DEFAULT_PRICES`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Replicate's hardware prices, dollars per second of predict_time (replicate.com/pricing, as collected in
# ../shared/docs/outputs-cost-ops.md §3).
HARDWARE = {"cpu": 0.000100, "T4": 0.000225, "A40 (small)": 0.000575, "A40 (large)": 0.000725,
            "L40S": 0.000975, "A100 80GB": 0.001400, "H100": 0.001525}


@dataclass(frozen=True)
class Price:
    """What one prediction of a model costs: `per_second` of predict_time plus `per_output` for each output it
    returned (either may be 0). `typical_seconds`: the predict_time estimates assume until the ledger holds this
    model's own (the median of its succeeded predictions)."""

    per_second: float = 0.0
    per_output: float = 0.0
    typical_seconds: float = 10.0


# One line per model. Which hardware a pinned version runs on is not published with it: see each note.
DEFAULT_PRICES: dict[str, Price] = {
    # T4 per the nodetool-replicate metadata (../shared/docs/replicate-api.md §7). No public source gives a typical
    # predict_time: 20 s is a guess, replaced by the ledger's median once shd has run it.
    "methexis-inc/img2prompt": Price(per_second=HARDWARE["T4"], typical_seconds=20.0),
    # NOT CONFIRMED: L40S or A40 (large) per the sources; the dearer L40S, so that a budget errs on the safe side.
    # 10 s (an inference): the fixtures' 3.8-5.5 s at 512x512 and 50 steps; shd's default paints about three times
    # the pixels (about a megapixel) in half the steps (25), so about 8 s, rounded up.
    "stability-ai/sdxl": Price(per_second=HARDWARE["L40S"], typical_seconds=10.0),
}


def price_for(prices: Mapping[str, Price], ref: str) -> Price | None:
    """The price of model `ref` ('owner/name:version'): the entry for that exact version, else for 'owner/name'."""
    return prices.get(ref) or prices.get(ref.partition(":")[0])


def cost(price: Price, predict_time: float | None, outputs: int = 0) -> float:
    """Dollars for one finished prediction (succeeded, failed or canceled alike: Replicate bills the time it ran)."""
    return price.per_second * (predict_time or 0.0) + price.per_output * outputs


def outputs_of(output: object) -> int:
    """How many outputs a prediction returned (what a per-output price counts): a list's length, else 0 or 1."""
    if isinstance(output, (list, tuple)):
        return len(output)
    return 0 if output is None else 1


def typical(recent: Sequence[float], default: float) -> tuple[float, str]:
    """A model's typical predict_time and where it comes from: the median of its recent succeeded predictions,
    else the configured default."""
    if recent:
        return float(statistics.median(recent)), f"median of {len(recent)} in the ledger"
    return default, "configured default"


@dataclass(frozen=True)
class Line:
    """One paid stage in an estimate: `count` predictions of `ref`, each `seconds` long at `price`."""

    stage: str
    ref: str
    count: int
    seconds: float
    source: str        # where `seconds` comes from
    price: Price

    @property
    def usd(self) -> float:
        return self.count * cost(self.price, self.seconds, 1 if self.price.per_output else 0)


@dataclass(frozen=True)
class Estimate:
    """What a video is expected to cost before anything is paid (before reuse: reused results cost nothing)."""

    frames: int
    lines: tuple[Line, ...]
    concurrency: int

    @property
    def predictions(self) -> int:
        return sum(line.count for line in self.lines)

    @property
    def usd(self) -> float:
        return sum(line.usd for line in self.lines)

    @property
    def seconds(self) -> float:
        """Wall time of the predictions, `concurrency` at a time (queueing on Replicate comes on top)."""
        return sum(line.count * line.seconds for line in self.lines) / max(1, self.concurrency)

    def summary(self) -> str:
        """One line: frames, predictions, dollars and time."""
        return (f"{self.frames} frames, {self.predictions} predictions, about {usd(self.usd)} and "
                f"{duration(self.seconds)} at concurrency {self.concurrency}")

    def details(self) -> list[str]:
        """One line per paid stage: count x seconds at the price = dollars (and where the seconds come from)."""
        out = []
        for line in self.lines:
            rate = []
            if line.price.per_second:
                rate.append(f"${line.price.per_second:.6f}/s")
            if line.price.per_output:
                rate.append(f"${line.price.per_output:.4f}/output")
            out.append(f"{line.stage:<7} {line.ref.partition(':')[0]:<28} {line.count} x {line.seconds:.1f} s at "
                       f"{' + '.join(rate) or '$0'} = {usd(line.usd)}  (predict_time: {line.source})")
        return out


def estimate(frames: int, stages: Iterable[tuple[str, str, int]], prices: Mapping[str, Price],
             times: Mapping[str, tuple[float, str]], concurrency: int) -> Estimate:
    """The estimate for `frames` frames. `stages`: (name, model ref, predictions per frame); `times`: each model's
    typical predict_time and its source (see `typical`), else its price's default. A model with no price costs $0
    here (config.py refuses a configured model without one)."""
    lines = []
    for name, ref, per_frame in stages:
        price = price_for(prices, ref) or Price()
        seconds, source = times.get(ref, (price.typical_seconds, "configured default"))
        lines.append(Line(name, ref, frames * per_frame, seconds, source, price))
    return Estimate(frames, tuple(lines), concurrency)


def usd(amount: float) -> str:
    """Dollars as people read them: cents from a dollar up ($1.44), else up to four decimals ($0.09, $0.0045)."""
    if amount >= 1:
        return f"${amount:.2f}"
    whole, _, cents = f"{amount:.4f}".rstrip("0").partition(".")
    return f"${whole}.{cents:0<2}"


def duration(seconds: float) -> str:
    """`m:ss` (or `h:mm:ss`), whole seconds, as the status table writes times."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"

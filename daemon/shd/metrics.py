"""`/metrics`: Prometheus text format, by prometheus_client.

Counters are read from the ledger at every scrape (not counted in memory), so they survive restarts and always
match `shd status` and the database. Names follow Prometheus conventions: one `shd_` prefix, base units (seconds),
counters end in `_total`; labels are low-cardinality only (model `owner/name`, status, state), never job ids or
file names.

    shd_up                                  1 while the daemon serves this page
    shd_paused                              1 while no predictions are created (token, budget, API unreachable)
    shd_predictions_total{model,status}     every finished ledger row by its final status (succeeded, failed,
                                            canceled, lost, refused, reused); a live one is counted once it ends
                                            (a counter never goes down), meanwhile it is in flight
    shd_prediction_seconds{model}           histogram of reported predict_time (what Replicate bills)
    shd_throttled_creates_total             creates turned away with a 429 (nothing created, nothing billed)
    shd_predictions_in_flight               predictions holding a slot now
    shd_queue_length                        paid stages waiting for a slot
    shd_frames{state}, shd_jobs{state}      rows by state, every job's
    shd_spend_usd_total                     spend so far, from the ledger
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shd.live import DaemonView
from shd.states import FrameState, JobState
from shd.store import LIVE_PREDICTION, Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# predict_time buckets (seconds): img2prompt takes a few seconds, SDXL ten to sixty.
BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def model_label(ref: str) -> str:
    """`owner/name` of a model ref (the version would only split one model's series in two)."""
    return ref.split(":", 1)[0]


class ShdCollector(Collector):
    def __init__(self, store: Store, view: DaemonView):
        self.store = store
        self.view = view

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("shd_up", "1 while the shd daemon is running and serving this page", value=1)
        yield GaugeMetricFamily("shd_paused", "1 while no predictions are created (token, budget, API unreachable)",
                                value=1 if self.view.paused() else 0)

        predictions = CounterMetricFamily("shd_predictions", "Finished predictions recorded in the ledger, by model "
                                          "and final status", labels=["model", "status"])
        totals: dict[tuple[str, str], int] = {}
        for row in self.store.ledger_by_model():
            if row["status"] in LIVE_PREDICTION:  # it would go down again as the prediction ends: not a counter
                continue
            key = (model_label(row["model"]), row["status"])
            totals[key] = totals.get(key, 0) + int(row["n"])
        for (model, status), n in sorted(totals.items()):
            predictions.add_metric([model, status], n)
        yield predictions

        seconds = HistogramMetricFamily("shd_prediction_seconds", "Reported predict_time of predictions (what is "
                                        "billed), by model", labels=["model"])
        hist: dict[str, tuple[list[int], int, float]] = {}
        for ref, h in self.store.predict_time_histogram(BUCKETS).items():
            label = model_label(ref)
            b, n, total = hist.get(label, ([0] * len(BUCKETS), 0, 0.0))
            hist[label] = ([x + y for x, y in zip(b, h["buckets"], strict=True)], n + h["count"], total + h["sum"])
        for model, (b, n, total) in sorted(hist.items()):
            cumulative = [(str(le), float(c)) for le, c in zip(BUCKETS, b, strict=True)] + [("+Inf", float(n))]
            seconds.add_metric([model], cumulative, sum_value=total)
        yield seconds

        yield CounterMetricFamily("shd_throttled_creates", "Prediction creates turned away with a 429 (nothing "
                                  "created or billed)", value=self.store.throttled_creates())
        yield GaugeMetricFamily("shd_predictions_in_flight", "Predictions holding a concurrency slot now",
                                value=self.view.in_flight())
        yield GaugeMetricFamily("shd_queue_length", "Paid stages queued or waiting for a retry, not yet in flight",
                                value=self.view.queue_length())
        yield self._by_state("shd_frames", "Frames by state, every job's", self.store.count_by_state("frames"),
                             [s.value for s in FrameState])
        yield self._by_state("shd_jobs", "Jobs by state", self.store.count_by_state("jobs"),
                             [s.value for s in JobState])
        spend = self.view.spend()
        if spend is not None:
            yield CounterMetricFamily("shd_spend_usd", "Spend so far in US dollars, as shd computes it",
                                      value=spend["total_usd"])

    @staticmethod
    def _by_state(name: str, doc: str, counts: dict[str, int], known: list[str]) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=["state"])
        for state in sorted(set(known) | set(counts)):  # every known state, 0 included: dashboards see it
            g.add_metric([state], counts.get(state, 0))
        return g


def registry(store: Store, view: DaemonView) -> CollectorRegistry:
    """A registry with shd's collector and the process's own (memory, CPU, open files)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ShdCollector(store, view))
    ProcessCollector(registry=reg)
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)

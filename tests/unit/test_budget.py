"""The caps, their periods and the prices, with plain values: budget.py and pricing.py are pure."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo

import pytest

from shd import budget, pricing
from shd.budget import Ask, Caps
from shd.scheduler import reuse

UTC = timezone.utc


def at(*args: int, tz: tzinfo = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


def ask(**figures: float) -> Ask:
    base = {"next_usd": 0.02, "today": 0.0, "month": 0.0, "in_flight": 0.0, "job_spent": 0.0, "job_in_flight": 0.0}
    return Ask(**{**base, **figures})


NOON = at(2026, 3, 14, 12, 0)


def test_no_caps_hold_nothing() -> None:
    assert budget.check(Caps(), ask(today=1e9, month=1e9, job_spent=1e9), NOON, UTC) is None


def test_a_create_passes_while_spent_plus_in_flight_plus_itself_stays_within_the_cap() -> None:
    caps = Caps(daily_usd=5.0)
    assert budget.check(caps, ask(today=4.90, in_flight=0.08, next_usd=0.02), NOON, UTC) is None
    hold = budget.check(caps, ask(today=4.90, in_flight=0.09, next_usd=0.02), NOON, UTC)
    assert hold is not None and hold.cap == "daily" and hold.until == at(2026, 3, 15, 0, 0)
    assert hold.why == "daily budget $5.00 reached; resumes at 00:00 UTC, or raise budget.daily_usd and reload"


def test_the_monthly_cap_resumes_on_the_first_in_the_configured_zone() -> None:
    berlin = budget.zone("Europe/Berlin")
    hold = budget.check(Caps(monthly_usd=50), ask(month=50), at(2026, 12, 31, 22, 30), berlin, "Europe/Berlin")
    assert hold is not None and hold.cap == "monthly"
    assert hold.why.startswith("monthly budget $50.00 reached; resumes on 2027-01-01 00:00 Europe/Berlin")
    assert hold.until == at(2027, 1, 1, 0, 0, tz=berlin)  # 23:00 UTC: already January in Berlin


def test_per_job_holds_on_the_estimate_before_anything_is_spent_and_on_spend_after() -> None:
    caps = Caps(per_job_usd=2.0)
    est = budget.check(caps, ask(job_estimate=3.4, job_frames=120), NOON, UTC)
    assert est is not None and est.until is None
    assert est.why == ("job estimated at $3.40 for 120 frames, over budget.per_job_usd $2.00; "
                       "raise budget.per_job_usd and reload")
    spent = budget.check(caps, ask(job_spent=1.95, job_in_flight=0.04, job_estimate=1.9), NOON, UTC)
    assert spent is not None and spent.why.startswith("job budget $2.00 reached ($1.95 spent)")
    assert budget.check(caps, ask(job_spent=1.9, job_estimate=1.9, today=100), NOON, UTC) is None


def test_warnings_from_80_percent_of_each_cap() -> None:
    caps = Caps(per_job_usd=1.0, daily_usd=10.0, monthly_usd=100.0)
    assert budget.warnings(caps, ask(today=7.9, month=7.9, job_spent=0.5)) == []
    assert [w[0] for w in budget.warnings(caps, ask(today=7.98, month=79.98, job_spent=0.78))] == [
        "per_job", "daily", "monthly"]


def test_days_follow_the_zone_through_daylight_saving() -> None:
    berlin = budget.zone("Europe/Berlin")
    before_dst = at(2026, 3, 28, 12, 0, tz=berlin)   # the clocks go forward on the 29th: that day has 23 hours
    assert budget.next_day(before_dst, berlin) == at(2026, 3, 29, 0, 0, tz=berlin)
    assert budget.next_day(at(2026, 3, 29, 12, 0, tz=berlin), berlin) - at(2026, 3, 29, 0, 0, tz=berlin) == 23 * 3600
    assert budget.day_start(before_dst, berlin) == at(2026, 3, 28, 0, 0, tz=berlin)
    assert budget.month_start(before_dst, berlin) == at(2026, 3, 1, 0, 0, tz=berlin)


def test_a_prediction_costs_its_predict_time_at_its_models_price() -> None:
    prices = {"a/b": pricing.Price(per_second=0.001), "a/b:v2v2v2v2": pricing.Price(per_output=0.04)}
    assert pricing.price_for(prices, "a/b:v1v1v1v1") == prices["a/b"]
    assert pricing.price_for(prices, "a/b:v2v2v2v2") == prices["a/b:v2v2v2v2"]
    assert pricing.price_for(prices, "c/d:v1v1v1v1") is None
    assert pricing.cost(prices["a/b"], 12.5) == pytest.approx(0.0125)
    assert pricing.cost(prices["a/b:v2v2v2v2"], 12.5, pricing.outputs_of(["x", "y"])) == pytest.approx(0.08)
    assert pricing.cost(prices["a/b"], None) == 0.0


def test_the_typical_predict_time_is_the_ledgers_median_else_the_default() -> None:
    assert pricing.typical([3.0, 9.0, 4.0], 20.0) == (4.0, "median of 3 in the ledger")
    assert pricing.typical([], 20.0) == (20.0, "configured default")


def test_a_minute_of_video_with_the_defaults() -> None:
    """The README's figure: 60 frames at fps 1, a prompt (20 s at T4) and a painting (10 s at L40S) each."""
    est = pricing.estimate(60, [("prompt", "methexis-inc/img2prompt:x", 1), ("image", "stability-ai/sdxl:y", 1)],
                           pricing.DEFAULT_PRICES, {}, concurrency=8)
    assert est.predictions == 120 and est.usd == pytest.approx(60 * (20 * 0.000225 + 10 * 0.000975)) == 0.855
    assert est.seconds == 60 * 30 / 8
    assert est.summary() == "60 frames, 120 predictions, about $0.855 and 3:45 at concurrency 8"


def test_dollars_read_as_people_write_them() -> None:
    assert [pricing.usd(x) for x in (0, 0.08000000000000002, 0.0045, 0.0225, 1.4399, 12.5)] == [
        "$0.00", "$0.08", "$0.0045", "$0.0225", "$1.44", "$12.50"]


def test_what_replicate_reuse_looks_up() -> None:
    """Prompts in every mode but none; paintings by seed when it is fixed, by prompt alone only with 'all'."""
    look = reuse.lookup_for
    assert look("prompts", "k", painting=False, seed=None, seed_fixed=False) == reuse.Lookup("k")
    assert look("none", "k", painting=False, seed=None, seed_fixed=False).active is False
    assert look("prompts", "k", painting=True, seed=8, seed_fixed=True) == reuse.Lookup("k", 8)
    assert look("prompts", "k", painting=True, seed=8, seed_fixed=False).active is False
    assert look("all", "k", painting=True, seed=8, seed_fixed=False) == reuse.Lookup("k")
    assert look("all", "k", painting=True, seed=8, seed_fixed=True) == reuse.Lookup("k", 8)
    assert reuse.content_key("a/b:v", {"x": 1, "image": "sha256:00"}) == reuse.content_key(
        "a/b:v", {"image": "sha256:00", "x": 1}) != reuse.content_key("a/b:w", {"x": 1, "image": "sha256:00"})

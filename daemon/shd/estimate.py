"""What a video is expected to cost before anything is paid: its frames, each paid stage's predictions, at the
configured prices and each model's typical predict_time (the median of its succeeded predictions in the ledger,
else the configured default). The arithmetic is pricing.py's; this gathers the figures (a probe, the ledger).
Used by `shd estimate`, by `shd process` before it starts, and by every job once its source is probed.
"""

from __future__ import annotations

from pathlib import Path

from shd import media, pricing
from shd.config import Config
from shd.store import Store


def paid_stages(cfg: Config, frames: int) -> list[tuple[str, str, int]]:
    """Each paid stage of a video of `frames` frames: (name, model ref, predictions). A new stage is one line."""
    r = cfg.replicate
    stages = [("prompt", r.prompt_model, frames), ("image", r.image_model, frames)]
    if cfg.output.film:  # one prediction per pair of consecutive paintings
        stages.append(("film", r.film_model, max(0, frames - 1)))
    return stages


def typical(cfg: Config, ref: str, store: Store | None) -> tuple[float, str]:
    """A typical predict_time of one prediction of `ref` as configured now, and where it comes from: the median of
    its recent succeeded predictions in the ledger, else its price's `typical_seconds`. FILM's network runs
    2^k - 1 times per pair (k = output.times_to_interpolate): its median counts the predictions made with the same
    k, and its `typical_seconds` is per in-between."""
    price = pricing.price_for(cfg.prices, ref) or pricing.Price()
    if cfg.output.film and ref == cfg.replicate.film_model:
        k = cfg.output.times_to_interpolate
        same = {"times_to_interpolate": k}
        recent = store.recent_predict_times(ref, same=same) if store is not None else []
        return pricing.typical(recent, price.typical_seconds * (2 ** k - 1))
    return pricing.typical(store.recent_predict_times(ref) if store is not None else [], price.typical_seconds)


def for_frames(cfg: Config, frames: int, store: Store | None) -> pricing.Estimate:
    stages = paid_stages(cfg, frames)
    times = {ref: typical(cfg, ref, store) for _, ref, _ in stages}
    return pricing.estimate(frames, stages, cfg.prices, times, cfg.replicate.concurrency)


def for_video(cfg: Config, ffmpeg: str, src: Path, store: Store | None) -> tuple[media.Probe, pricing.Estimate]:
    """Probe `src` (InputError if it is no video) and estimate it from the frames its header promises."""
    probe = media.probe(ffmpeg, src)
    return probe, for_frames(cfg, media.frame_count(probe.duration, cfg.pipeline.fps), store)


def over_limit(cfg: Config, frames: str, est: pricing.Estimate, how: str) -> str:
    """The reason a video of `frames` frames (found `how`) is refused: over `pipeline.max_frames`, with its estimate."""
    return (f"{frames} frames at fps={cfg.pipeline.fps:g} ({how}) is over pipeline.max_frames = "
            f"{cfg.pipeline.max_frames}: refused (estimated {pricing.usd(est.usd)} for {est.predictions} predictions)")

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


def paid_stages(cfg: Config) -> list[tuple[str, str, int]]:
    """Each paid stage a frame goes through: (name, model ref, predictions per frame). A new stage is one line."""
    r = cfg.replicate
    return [("prompt", r.prompt_model, 1), ("image", r.image_model, 1)]


def typical_times(cfg: Config, store: Store | None) -> dict[str, tuple[float, str]]:
    """Each paid model's typical predict_time and where it comes from (the ledger, else the configured default)."""
    times = {}
    for _, ref, _ in paid_stages(cfg):
        price = pricing.price_for(cfg.prices, ref) or pricing.Price()
        recent = store.recent_predict_times(ref) if store is not None else []
        times[ref] = pricing.typical(recent, price.typical_seconds)
    return times


def for_frames(cfg: Config, frames: int, store: Store | None) -> pricing.Estimate:
    return pricing.estimate(frames, paid_stages(cfg), cfg.prices, typical_times(cfg, store), cfg.replicate.concurrency)


def for_video(cfg: Config, ffmpeg: str, src: Path, store: Store | None) -> tuple[media.Probe, pricing.Estimate]:
    """Probe `src` (InputError if it is no video) and estimate it from the frames its header promises."""
    probe = media.probe(ffmpeg, src)
    return probe, for_frames(cfg, media.frame_count(probe.duration, cfg.pipeline.fps), store)


def over_limit(cfg: Config, frames: str, est: pricing.Estimate, how: str) -> str:
    """The reason a video of `frames` frames (found `how`) is refused: over `pipeline.max_frames`, with its estimate."""
    return (f"{frames} frames at fps={cfg.pipeline.fps:g} ({how}) is over pipeline.max_frames = "
            f"{cfg.pipeline.max_frames}: refused (estimated {pricing.usd(est.usd)} for {est.predictions} predictions)")

"""SIGHUP: the config file read again and applied. Live settings apply at once; those built at start (RESTART_ONLY,
[paths], [watch], [web], [hooks]) are logged by name (`reload_needs_restart`) and kept until the next start, and so
are the prices of the models in use where the new file has none for them.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from shd import config, logs, pricing
from shd.app import App
from shd.config import Config

# Replicate settings built into the client and the models once, at start: a reload logs them and keeps the old.
RESTART_ONLY = ("create_wait", "request_timeout", "inline_max_kb", "prompt_model", "image_model", "prompt_input",
                "image_input")


def read_new_config(cfg: Config, config_arg: str | None, log: Any) -> Config:
    """The config to reload to from `cfg`, the one in force: the file read again, with what is built once at start
    kept from `cfg` (and logged by name). ConfigError for a bad file."""
    new = config.load(config_arg)
    kept = {"paths": cfg.paths, "watch": cfg.watch, "web": cfg.web, "hooks": cfg.hooks}
    restart = [f"[{name}]" for name, value in kept.items() if getattr(new, name) != value]
    old_r = cfg.replicate
    restart += [f"replicate.{key}" for key in RESTART_ONLY if getattr(new.replicate, key) != getattr(old_r, key)]
    if restart:
        log.warning("reload_needs_restart", settings=restart,
                    detail="these apply at the next start (`systemctl restart shd`); the rest applies now")
    new = config.replace(new, **kept, replicate=dataclasses.replace(
        new.replicate, **{key: getattr(old_r, key) for key in RESTART_ONLY}))
    # The models in use stay until the next start, and so do their prices where the new file has none for them
    # (it prices the models it names): spend on them must stay counted and capped.
    prices = dict(new.prices)
    for ref in (old_r.prompt_model, old_r.image_model):
        if pricing.price_for(prices, ref) is None:
            for key in (ref, ref.partition(":")[0]):
                if key in cfg.prices:
                    prices[key] = cfg.prices[key]
            log.warning("reload_keeps_price", model=ref,
                        detail="the model in use until the next start keeps its price")
    return config.replace(new, prices=prices)


def apply_config(app: App, new: Config, log: Any) -> None:
    """Put `new` in force in the running app: the runner, the engine, the logs."""
    app.cfg = new
    app.runner.cfg = new
    app.engine.reload(new)
    logs.setup(new.log.level, new.log.format)
    log.info("reloaded", concurrency=new.replicate.concurrency, max_jobs=new.pipeline.max_jobs)
    if app.engine.paused:  # the token may have been fixed along with the config: check now
        threading.Thread(target=app.engine.try_resume, name="shd-auth-check", daemon=True).start()

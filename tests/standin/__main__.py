"""Run the stand-in in the foreground: ``python -m tests.standin --workdir DIR [--port N] ...``.

Prints one JSON line ``{"url": ..., "cert": ..., "token": ...}`` to stdout, then serves until SIGTERM/SIGINT.
``--queue-delay`` / ``--run-time`` take ``SECONDS`` (all models) or ``owner/name=SECONDS`` and may repeat.
Drive faults from another process through ``/__control/*`` (see ``tests/standin/control.py``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import sys
import threading
from typing import Any

from .models import BY_NAME
from .server import StandIn


def _per_model(values: list[str], flag: str) -> tuple[float | None, dict[str, float]]:
    default, per_model = None, {}
    for value in values:
        model, sep, seconds = value.rpartition("=")
        if not sep:
            default = float(seconds)
        elif model in BY_NAME:
            per_model[model] = float(seconds)
        else:
            raise SystemExit(f"{flag}: unknown model {model!r}; known: {sorted(BY_NAME)}")
    return default, per_model


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the server, print its JSON line, and block until a signal arrives."""
    parser = argparse.ArgumentParser(prog="python -m tests.standin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=pathlib.Path, required=True, help="where the CA certificate is written")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="r8_test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queue-delay", action="append", default=[], metavar="[MODEL=]SECONDS")
    parser.add_argument("--run-time", action="append", default=[], metavar="[MODEL=]SECONDS")
    parser.add_argument("--output-ttl", type=float, default=3600.0)
    parser.add_argument("--sync-status", choices=["succeeded", "processing"], default="succeeded")
    parser.add_argument("--rate-limit-scale", type=float, default=1.0)
    parser.add_argument("--no-rate-limit", action="store_true")
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    args = parser.parse_args(argv)

    queue_default, queue = _per_model(args.queue_delay, "--queue-delay")
    run_default, run = _per_model(args.run_time, "--run-time")
    options: dict[str, Any] = {"output_ttl": args.output_ttl, "sync_status": args.sync_status}
    if queue_default is not None:
        options["queue_delay"] = queue_default
    if run_default is not None:
        options["run_time"] = run_default
    standin = StandIn(args.workdir, args.token, port=args.port, seed=args.seed, tls=not args.http,
                      rate_limits={"scale": args.rate_limit_scale, "enabled": not args.no_rate_limit}, **options)
    for model in set(queue) | set(run):
        standin.set_latency(model, queue.get(model, standin.options.queue_delay),
                            run.get(model, standin.options.run_time))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    standin.start()
    try:
        print(json.dumps({"url": standin.url, "cert": str(standin.cert_path), "token": standin.token}), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

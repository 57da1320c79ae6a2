"""The `shd` command: argparse only. Every ShdError becomes one line on stderr and the exit code its class names;
no command prints a traceback (a bug is one line too, and its traceback goes to the log).

Exit codes (the README's table): 0 ok; 1 the job failed (or was canceled under `shd process`), or an unexpected error; 2
bad config, no token or bad usage (an unknown job id, nothing to retry, another daemon runs, an --output that exists,
`shd process` on a video in the inbox, an inbox, outbox or state directory that cannot be a folder); 3 bad input video
(also over pipeline.max_frames, `shd estimate` too); 4 ffmpeg failed, or a disk error (full, a vanished folder: the job
is kept); 5 database error (damaged, locked: the job is kept); 6 Replicate error (credentials refused, unreachable: the
job is kept; a cancel that did not reach it); 8 held by a budget cap (`shd process`: the job is kept and resumes once
the budget allows); 130 interrupted (Ctrl-C; SIGTERM, SIGHUP for `shd process`); 141 the output was cut off (a closed
pipe, e.g. `| head`). 7 is not used (it was a full disk, now 4).
Every command makes the files it creates private first (perms.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from shd import __version__, config, logs, perms
from shd.errors import InputError, Interrupted, ShdError

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a Unix tool killed by it
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0  # shd status --watch: no busy loop, and a wait sleep() can take (no nan)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shd", description="Subterranean Homesick Diffusion: repaint videos frame by "
                                "frame through image-to-prompt and text-to-image models.")
    p.add_argument("--version", action="version", version=f"shd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--config", metavar="FILE", help="config file (default: $SHD_CONFIG, ./shd.toml, "
                        "~/.config/shd/shd.toml, /etc/shd/shd.toml)")
        return sp

    add("run", "run the daemon in the foreground: watch the inbox, paint every video, write the outbox")
    sp = add("process", "paint one video in the foreground and print the output path")
    sp.add_argument("video", type=Path)
    sp.add_argument("--output", type=Path, metavar="FILE", help="where to write the mp4 (default: the outbox); "
                    "an existing FILE is refused")
    sp.add_argument("--overwrite", action="store_true", help="replace --output FILE if it exists")
    logged = sp.add_mutually_exclusive_group()
    logged.add_argument("--verbose", action="store_true", help="on a terminal, every log line above the progress "
                        "line (by default only warnings and errors)")
    logged.add_argument("--log-file", type=argparse.FileType("a", encoding="utf-8"), metavar="FILE",
                        help="append the log to FILE (JSON lines) instead of the terminal")
    sp = add("estimate", "print what painting a video would cost (frames, predictions, dollars, time); pays nothing")
    sp.add_argument("video", type=Path)
    sp = add("status", "show jobs and their progress")
    sp.add_argument("job", nargs="?", help="one job (id or unique prefix): its failed frames and reasons")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--frames", action="store_true", help="with JOB: each frame's time, state, cost and prompt")
    sp.add_argument("--watch", action="store_true", help="redraw the table in place every --interval seconds "
                    "until Ctrl-C (on a terminal; elsewhere it prints once)")
    sp.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                    help="seconds between redraws with --watch (default 2)")
    sp = add("retry", "start a job's failed frames (and FILM pairs) again (and the job, if it failed or was canceled)")
    sp.add_argument("job")
    sp = add("cancel", "cancel a job and its remote predictions")
    sp.add_argument("job")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "status" and args.watch and (args.json or not MIN_INTERVAL <= args.interval <= MAX_INTERVAL):
        parser.error(f"--watch draws the table for people: not with --json, and --interval must be "
                     f"{MIN_INTERVAL:g} to {MAX_INTERVAL:g} seconds")
    if args.command == "status" and args.frames and (not args.job or args.watch):
        parser.error("--frames lists one job's frames: give a JOB, without --watch")
    perms.make_private()
    logging_set_up = False
    try:
        cfg = config.load(args.config)
        logs.setup(cfg.log.level, cfg.log.format)
        logging_set_up = True
        code = int(COMMANDS[args.command](cfg, args))
        sys.stdout.flush()  # a reader that went away is found here, not at exit
        if logs.lost():
            _say(f"shd: some log lines could not be written ({logs.lost()}); the work went on without them")
        return code
    except ShdError as e:
        print(f"shd: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("shd: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    except BrokenPipeError:
        # `shd status | head -1`, `| grep -q`: the reader has what it wanted. Nothing more can go to stdout (not
        # even Python's own flush at exit), and there is nothing to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:  # noqa: BLE001 - a bug: one line for the user; the daemon's log keeps the traceback
        if args.command == "run" and logging_set_up:
            logs.get().exception("internal_error")
        print(f"shd: internal error ({type(e).__name__}: {e}); this is a bug, please report it", file=sys.stderr)
        return 1


def _say(line: str) -> None:
    """One line on stderr, if stderr can still take it."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def cmd_process(cfg: config.Config, args: argparse.Namespace) -> int:
    from shd import process

    for signum in (signal.SIGTERM, signal.SIGHUP):  # stopped like Ctrl-C (SIGHUP: its terminal closed): the job
        signal.signal(signum, signal.default_int_handler)  # stays resumable, no ffmpeg is left running
    try:
        return process.run(cfg, args.video, args.output, args.overwrite, verbose=args.verbose,
                           log_file=args.log_file)
    finally:
        if args.log_file is not None:
            try:
                args.log_file.close()
            except OSError:
                pass  # the lines it could not take were flushed, failed and counted already (logs.lost)


def cmd_estimate(cfg: config.Config, args: argparse.Namespace) -> int:
    from shd import estimate, media, pricing
    from shd.store import Store

    ffmpeg = media.find_ffmpeg(cfg.ffmpeg.path)
    store = Store.open_readonly(cfg.paths.database) if cfg.paths.database.exists() else None
    try:
        probe, est = estimate.for_video(cfg, ffmpeg, args.video, store)
    finally:
        if store is not None:
            store.close()
    print(f"{args.video}: {pricing.duration(probe.duration)} at fps={cfg.pipeline.fps:g}: {est.summary()}")
    for line in est.details():
        print(f"  {line}")
    if cfg.budget.per_job_usd is not None and est.usd > cfg.budget.per_job_usd:
        print(f"  over budget.per_job_usd = {pricing.usd(cfg.budget.per_job_usd)}: shd would hold it before its "
              f"first paid call")
    print("An estimate, not a quote: Replicate bills each prediction's predict_time on its hardware; reused "
          "results cost nothing.")
    if est.frames > cfg.pipeline.max_frames:  # as `shd process` and the daemon would refuse it: exit 3, the reason
        raise InputError(args.video, estimate.over_limit(cfg, str(est.frames), est, "by its header"))
    return 0


def cmd_status(cfg: config.Config, args: argparse.Namespace) -> int:
    from shd import status
    from shd.store import Store

    store = Store.open_readonly(cfg.paths.database)
    zone = cfg.budget.timezone
    try:
        if args.watch:
            from shd.status_watch import watch

            return watch(lambda: status.as_table(store, args.job, cfg.paths.state_dir, zone=zone), args.interval)
        if args.json:
            print(status.as_json(store, args.job, frames=args.frames, state_dir=cfg.paths.state_dir, zone=zone))
        elif args.frames:
            print(status.frames_table(store, args.job))
        else:
            print(status.as_table(store, args.job, cfg.paths.state_dir, zone=zone))
    finally:
        store.close()
    return 0


def cmd_retry(cfg: config.Config, args: argparse.Namespace) -> int:
    from shd import jobs, liveness
    from shd.store import Store

    store = Store.open(cfg.paths.database)
    try:
        job = jobs.retry(cfg, store, args.job)
        worker = liveness.worker(cfg.paths.state_dir)
        who = ("the daemon works on it now" if worker is not None and worker.kind == "daemon"
               else "`shd run` works on it (no daemon runs now)")
        print(f"job {job.id} is {job.state}; its failed frames start again; {who}")
    finally:
        store.close()
    return 0


def cmd_cancel(cfg: config.Config, args: argparse.Namespace) -> int:
    from shd import jobs
    from shd.backends.replicate import ReplicateRemote
    from shd.store import Store

    store = Store.open(cfg.paths.database)
    try:
        token = config.read_token(cfg)
        logs.redact(token)
        remote = ReplicateRemote(token, request_timeout=cfg.replicate.request_timeout)
        job, n = jobs.cancel(store, remote, args.job, prices=cfg.prices)
        print(f"job {job.id} canceled; {n} remote prediction(s) canceled")
    finally:
        store.close()
    return 0


def cmd_run(cfg: config.Config, args: argparse.Namespace) -> int:
    from shd import service

    return service.run(cfg, args.config)


COMMANDS = {"run": cmd_run, "process": cmd_process, "estimate": cmd_estimate, "status": cmd_status,
            "retry": cmd_retry, "cancel": cmd_cancel}

"""`shd run`: the daemon (daemon.py: its main loop, signals, systemd), and what the loop calls on:

  daemon.py       Daemon: the loop; claims from the inbox; signals (flags only); sd_notify, watchdog, heartbeat
  state_dir.py    the state directory's lock taken at start, waiting while a `shd process` holds it
  job_threads.py  up to pipeline.max_jobs job threads, oldest first; a deferred job tried again later
  reload.py       SIGHUP: the config read again; live settings applied, those built at start kept and named
  summary.py      STATUS='s one line
"""

from shd.service.daemon import Daemon, run
from shd.service.reload import RESTART_ONLY
from shd.service.summary import summary_line

__all__ = ["RESTART_ONLY", "Daemon", "run", "summary_line"]

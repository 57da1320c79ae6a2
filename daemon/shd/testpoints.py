"""Named points where a test kills shd on purpose, to check what a crash exactly there leaves behind: with
`SHD_TEST_KILL_AT=<point>` in its environment, shd SIGKILLs itself (no clean-up at all, as a power cut) the first
time it reaches that point. The variable is read once, at import; without it (always, outside tests) a point costs
one comparison.

    ledger-written     a paid create is recorded in the ledger (durably), and not sent yet
    create-answered    the create came back with the prediction's id, which is not recorded yet
    publish-partial    publishing: the first file of the set (a sidecar) has its outbox name, the video not yet
    publish-placed     publishing: every file of the set has its name, the job is not recorded done yet
    done-recorded      the job is recorded done, its staged files (`publish/`) not removed yet
"""

from __future__ import annotations

import os
import signal

ENV = "SHD_TEST_KILL_AT"
_KILL_AT = os.environ.get(ENV) or None


def reached(point: str) -> None:
    """SIGKILL this process if the test asked for it at `point`."""
    if point == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)

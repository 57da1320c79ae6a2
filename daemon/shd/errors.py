"""Every error shd raises on purpose, as one tree.

    ShdError                     anything the CLI reports as one line and a non-zero exit
    ├── ConfigError              the config file is wrong (lists every problem, names the file)
    ├── UsageError               a command asked for something that cannot be done (an unknown job id, nothing to
    │                            retry, a job that is already finished)
    ├── Interrupted              the user stopped a command (Ctrl-C)
    ├── TokenMissing             no Replicate API token anywhere it is looked for
    ├── StateDirBusy             another daemon holds the state directory
    ├── OutputExists             `shd process --output FILE` would overwrite FILE
    ├── InputError               a source video cannot be processed (names the file and why)
    ├── MediaError               ffmpeg failed on a file we made or trusted (names the file and why)
    ├── DiskError                a file or folder shd writes cannot be written: the job waits, never failed for it
    │   └── DiskFull             ... for lack of space
    ├── BudgetHeld               `shd process`: the job is held by a budget cap (the job is kept, never failed)
    ├── StoreError               the SQLite store refused or failed
    │   ├── IllegalTransition    a state change the state machine does not allow
    │   └── DatabaseDamaged      the database file is corrupt (says how to recover)
    └── BackendError             a remote model call failed; subclasses say what to do next
        ├── Transient            worth retrying after a backoff (5xx, network, "please retry" model errors);
        │                        `unreachable`: the request never reached the server (nothing was created)
        │   └── RateLimited      429: retry after `retry_after` seconds and slow down
        ├── AuthFailed           401/402/403: pause all work until the token or account is fixed
        ├── Rejected             422 and friends: this input will never work, fail the frame
        ├── ModelFailed          the prediction ran and failed (e.g. NSFW); may be retried with a new seed
        └── OutputGone           the prediction or its output expired/vanished: create it again

Errors that drive retries carry the data the retry needs (`RateLimited.retry_after`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ShdError(Exception):
    """Raised for every failure shd reports to a user; `str()` is one line."""

    exit_code = 1


class ConfigError(ShdError):
    """Raised when a config file cannot be read or fails validation; lists every problem at once."""

    exit_code = 2

    def __init__(self, path: Path | str, problems: Sequence[str]):
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(f"{self.path}: " + "; ".join(self.problems))


class UsageError(ShdError):
    """Raised when a command asks for something that cannot be done: an unknown job id, nothing to retry, a job
    that is already finished (exit 2, "bad usage")."""

    exit_code = 2


class Interrupted(ShdError):
    """Reported when the user stopped a command (Ctrl-C; SIGTERM for `shd process`): what it had done is kept."""

    exit_code = 130


class TokenMissing(ShdError):
    """Raised when no Replicate API token is configured, before any work starts."""

    exit_code = 2


class StateDirBusy(ShdError):
    """Raised when `shd run` finds another daemon holding the state directory's lock (names its pid)."""

    exit_code = 2


class OutputExists(ShdError):
    """Raised when a video would be published over an existing file the user named (`--output FILE`)."""

    exit_code = 2

    def __init__(self, path: Path | str, advice: str):
        self.path = str(path)
        super().__init__(f"{self.path}: already exists; {advice}")


class InputError(ShdError):
    """Raised when a source video cannot be processed: missing, empty, not a video, truncated, no video stream."""

    exit_code = 3

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MediaError(ShdError):
    """Raised when ffmpeg fails on a file shd produced or already accepted."""

    exit_code = 4

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DiskError(ShdError):
    """Raised when a file or folder shd writes cannot be written (a vanished or read-only folder, an I/O error): not
    the video's fault, so the job is deferred and tried again later, never failed or moved aside for it. Exit 4
    (`shd process` says the job is kept)."""

    exit_code = 4


class DiskFull(DiskError):
    """Raised when a write fails for lack of space (ENOSPC/EDQUOT, ffmpeg's exit status for them, SQLITE_FULL)."""

    def __init__(self, path: Path | str, detail: str = ""):
        self.path = str(path)
        super().__init__(f"{self.path}: no space left on device" + (f" ({detail})" if detail else ""))


class BudgetHeld(ShdError):
    """Reported when `shd process` ends because its job is held by a budget cap (budget.py) and nothing of it is in
    flight: the job keeps its frames and what it paid for, and goes on once the budget allows (exit 8)."""

    exit_code = 8

    def __init__(self, why: str):
        self.why = why
        super().__init__(f"held: {why}")


class StoreError(ShdError):
    """Raised when the SQLite store refuses an operation or cannot be opened."""

    exit_code = 5


class IllegalTransition(StoreError):
    """Raised when a job or frame is asked to move to a state the state machine forbids."""

    def __init__(self, what: str, current: str, target: str):
        self.what, self.current, self.target = what, current, target
        super().__init__(f"{what}: illegal transition {current} -> {target}")


class DatabaseDamaged(StoreError):
    """Raised when SQLite finds the database file corrupt; the message says how to move it aside or recover it."""

    def __init__(self, path: Path | str, detail: str):
        self.path = str(path)
        super().__init__(
            f"{path}: the database is damaged ({detail}); stop shd and move it aside (mv {path} {path}.damaged; "
            f"mv {path}-wal {path}.damaged-wal if it exists; rm -f {path}-shm): shd then starts afresh, the outbox "
            f"untouched; to keep what it held, recover it first: sqlite3 {path}.damaged .recover | sqlite3 {path}")


class BackendError(ShdError):
    """Raised when a remote model call fails; the subclass says how the scheduler should react."""

    exit_code = 6


class Transient(BackendError):
    """Raised for failures worth retrying after a backoff (5xx, network faults, 'please retry' model errors)."""

    def __init__(self, message: str, retry_after: float | None = None, *, maybe_created: bool = False,
                 unreachable: bool = False):
        self.retry_after = retry_after
        # True when a create request may have reached the server before failing (timeout, dropped connection):
        # the prediction may exist and be billed, so look it up before sending another.
        self.maybe_created = maybe_created
        # True when the request provably never reached the server (no connection could be made): nothing was
        # created or billed, and the API is unreachable for every request, not just this one.
        self.unreachable = unreachable
        super().__init__(message)


class RateLimited(Transient):
    """Raised on HTTP 429; `retry_after` is the server's hint in seconds, when it gave one."""


class AuthFailed(BackendError):
    """Raised on 401/402/403: the token or the account is wrong, so every call would fail; pause, don't fail frames."""


class Rejected(BackendError):
    """Raised when the API refuses this input for good (422, 400, 404 on a version, 413)."""


class ModelFailed(BackendError):
    """Raised when a prediction ran and failed; `retry_with_new_seed` is set for errors a new seed may avoid."""

    def __init__(self, message: str, *, retry_with_new_seed: bool = False):
        self.retry_with_new_seed = retry_with_new_seed
        super().__init__(message)


class OutputGone(BackendError):
    """Raised when a recorded prediction or its output no longer exists on the server; create it again."""

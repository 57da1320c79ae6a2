"""The auth pause: a 401/402/403 stops all work, loudly, until the credentials are accepted again.

While paused no task is handed out (this is the dispatcher's gate); the tasks wait in their queues. Every
`recheck` seconds (`replicate.auth_recheck`) the token is read again (a fixed credential file or environment is picked
up without a restart) and checked with the service, in a thread of its own so that a slow check blocks nothing; the
first check that passes resumes all work. A reload checks at once (`try_resume`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shd import logs
from shd.backends.base import Remote
from shd.errors import AuthFailed, BackendError, ShdError


class AuthPause:
    """The gate that closes on an auth failure. Thread-safe."""

    kind = "auth"

    def __init__(self, remote: Remote, *, recheck: float, clock: Callable[[], float],
                 on_change: Callable[[], None], token_provider: Callable[[], str] | None = None):
        self.remote = remote
        self.recheck = recheck
        self.clock = clock
        self.on_change = on_change  # called when it pauses and when it resumes
        self.token_provider = token_provider
        self.log = logs.get()
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._since: float | None = None
        self._check_at = 0.0

    @property
    def paused(self) -> str | None:
        """Why all work is paused, or None."""
        return self._reason

    @property
    def since(self) -> float | None:
        """When the credentials were first refused (epoch seconds), or None."""
        return self._since

    def pause(self, reason: str) -> None:
        with self._lock:
            new = self._reason is None
            if new:
                self.log.error("paused_auth_failed", reason=reason,
                               hint="fix the Replicate token (credential file or REPLICATE_API_TOKEN) "
                                    "or the account; shd resumes by itself once it is accepted")
                self._since = time.time()
            self._reason = reason
            self._check_at = self.clock() + self.recheck
        if new:
            self.on_change()

    def hold(self, now: float) -> float | None:
        """None when not paused; else seconds until the next check, starting that check when it is due."""
        with self._lock:
            if self._reason is None:
                return None
            if now < self._check_at:
                return self._check_at - now
            self._check_at = now + self.recheck
        threading.Thread(target=self.try_resume, name="shd-auth-check", daemon=True).start()
        return self.recheck

    def try_resume(self) -> bool:
        """Re-read the token and ask the service whether it is accepted now; resume if it is."""
        if self._reason is None:
            return True
        if self.token_provider is not None:
            try:
                self.remote.set_token(self.token_provider())
            except ShdError as e:
                self.log.warning("token_unavailable", error=str(e))
                return False
        try:
            self.remote.check_auth()
        except AuthFailed as e:
            self.log.warning("still_paused", reason=str(e))
            return False
        except BackendError as e:
            self.log.warning("auth_check_failed", error=str(e))
            return False
        with self._lock:
            self._reason = self._since = None
        self.on_change()
        self.log.info("resumed_after_auth_fix")
        return True

"""Who may see the dashboard: one-time login codes, browser sessions and CSRF tokens.

A browser cannot send `Authorization: Bearer`, so the dashboard signs people in once (with a
one-time code that `flash dashboard` mints through the token-protected control API, or with
the platform token or API key typed into a form) and then knows them by a session cookie.
Sessions live in memory only: a platform restart signs everyone out, and no secret is
written to disk. Both tables are bounded, so no number of login attempts grows memory.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

SESSION_COOKIE = "flash_dashboard"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 100
CODE_TTL_S = 60.0
MAX_CODES = 100

Value = TypeVar("Value")


class Expiring(Generic[Value]):
    """A bounded map whose entries expire: the least recently used goes first when full."""

    def __init__(self, ttl_s: float, limit: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._limit = limit
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Value]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, value: Value) -> None:
        self._entries[key] = (self._clock() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def get(self, key: str) -> Value | None:
        """The live entry (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def pop(self, key: str) -> Value | None:
        """The live entry, removed (so it can be used once), or None."""
        value = self.get(key)
        self._entries.pop(key, None)
        return value


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str  # sent back with every form that changes something
    operator: bool  # signed in with the platform token: may read logs and payloads, and act


class DashboardAuth:
    """Login codes and sessions. The platform token (or a code minted with it) makes an
    operator session; the API key, when the platform has one, a read-only session."""

    def __init__(self, token: str, api_key: str | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._token = token.encode()
        self._api_key = api_key.encode() if api_key else None
        self._codes: Expiring[bool] = Expiring(CODE_TTL_S, MAX_CODES, clock)
        self._sessions: Expiring[Session] = Expiring(SESSION_TTL_S, MAX_SESSIONS, clock)

    def mint_code(self) -> str:
        """A code for one login within CODE_TTL_S."""
        code = secrets.token_urlsafe(24)
        self._codes.put(code, True)
        return code

    def redeem(self, code: str) -> Session | None:
        """An operator session for a valid, unused code; a code works once."""
        return self._new_session(operator=True) if self._codes.pop(code) else None

    def sign_in(self, secret: str) -> Session | None:
        """A session for the platform token (operator) or the API key (read-only)."""
        supplied = secret.strip().encode()
        if hmac.compare_digest(supplied, self._token):
            return self._new_session(operator=True)
        if self._api_key is not None and hmac.compare_digest(supplied, self._api_key):
            return self._new_session(operator=False)
        return None

    def session(self, session_id: str | None) -> Session | None:
        return self._sessions.get(session_id) if session_id else None

    def sign_out(self, session_id: str) -> None:
        self._sessions.pop(session_id)

    def _new_session(self, operator: bool) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(24), operator)
        self._sessions.put(session.id, session)
        return session


def csrf_ok(session: Session, supplied: str | None) -> bool:
    """Whether a form came from one of this session's own pages."""
    return supplied is not None and hmac.compare_digest(supplied.encode(), session.csrf.encode())

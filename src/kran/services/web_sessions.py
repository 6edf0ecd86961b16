"""Sign-in for the web dashboard: a key id and its secret, or a one-time link a CLI
command prints; then a session token held in an HttpOnly cookie. Tokens are random
(256 bits) and stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

from kran.domain.auth import Principal
from kran.errors import NotFound, Unauthorized
from kran.ports import Clock
from kran.services.auth import Authenticator

LINK_TTL_S = 600.0
PURGE_EVERY_S = 3600.0


class SessionStore(Protocol):
    def open(self, token_hash: str, user: str, key_id: str | None, csrf: str, now: float, expires: float) -> None: ...
    def find(self, token_hash: str, now: float) -> tuple[Principal, str] | None: ...
    def close(self, token_hash: str) -> None: ...
    def add_link(self, token_hash: str, user: str, by: str, key_id: str | None, now: float, expires: float) -> None: ...
    def peek_link(self, token_hash: str, now: float) -> str | None: ...
    def take_link(self, token_hash: str, now: float) -> tuple[str, str | None] | None: ...
    def purge(self, now: float) -> None: ...


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class WebSessions:
    def __init__(self, store: SessionStore, auth: Authenticator, clock: Clock, ttl_s: float) -> None:
        self.store = store
        self.auth = auth
        self.clock = clock
        self.ttl_s = ttl_s
        self._purged = 0.0

    def sign_in(self, key_id: str, secret: str) -> tuple[str, str]:
        """(session token, CSRF token) for a key id and its secret."""
        who = self.auth.verify_key(key_id.strip(), secret.strip())
        return self._open(who.user, key_id.strip())

    def link_user(self, token: str) -> str | None:
        """Whom a link would sign in (shown before it is used), None if it would not."""
        return self.store.peek_link(token_hash(token), self.clock.now()) if 20 <= len(token) <= 100 else None

    def sign_in_with_link(self, token: str) -> tuple[str, str]:
        found = self.store.take_link(token_hash(token), self.clock.now()) if 20 <= len(token) <= 100 else None
        if found is None:
            raise Unauthorized("this sign-in link is unknown, used or expired: ask for a new one (kran ui-link)")
        return self._open(*found)  # revoking the key that made the link ends the session too

    def make_link(self, who: Principal, user: str | None, key_id: str | None) -> tuple[str, float]:
        """A one-time sign-in link's token for `user` (oneself; any user for an admin), and
        how long it lasts. `key_id`: the key the request came with."""
        target = user or who.user
        if target != who.user:
            if not who.is_admin:
                raise NotFound(f"user {target!r} not found")  # as for any other user's object
            found = self.auth.identities.get_user(target)
            if found is None or found.disabled:
                raise NotFound(f"user {target!r} not found")
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        self.store.add_link(token_hash(token), target, who.user, key_id, now, now + LINK_TTL_S)
        return token, LINK_TTL_S

    def _open(self, user: str, key_id: str | None) -> tuple[str, str]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock.now()
        self.store.open(token_hash(token), user, key_id, csrf, now, now + self.ttl_s)
        if now - self._purged > PURGE_EVERY_S:
            self._purged = now
            self.store.purge(now)
        return token, csrf

    def session(self, token: str) -> tuple[Principal, str] | None:
        """The principal and CSRF token of a live session, None otherwise."""
        if not 20 <= len(token) <= 100:
            return None
        return self.store.find(token_hash(token), self.clock.now())

    def sign_out(self, token: str) -> None:
        if token:
            self.store.close(token_hash(token))

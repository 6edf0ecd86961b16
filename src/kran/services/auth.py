"""Who is asking: signed requests, bearer tokens, a trusted proxy; users and keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from kran.domain.auth import (
    KeyRecord,
    Principal,
    Role,
    UserRecord,
    sign_digest,
    signature_matches,
    timestamp_problem,
)
from kran.domain.policy import act_for_refusal
from kran.errors import Forbidden, InvalidInput, NotFound, Unauthorized

NONCE_TTL_S = 600


class Identities(Protocol):
    def count_users(self) -> int: ...
    def add_user(self, name: str, role: Role, now: float) -> UserRecord: ...
    def get_user(self, name: str) -> UserRecord | None: ...
    def users(self) -> list[UserRecord]: ...
    def keys(self, user: str | None = None) -> list[KeyRecord]: ...
    def set_disabled(self, name: str, disabled: bool) -> None: ...
    def create_key(self, user: str, now: float) -> tuple[str, str]: ...
    def revoke_key(self, key_id: str) -> None: ...
    def credentials(self, key_id: str) -> tuple[Principal, str] | None: ...


class Authenticator:
    def __init__(
        self,
        identities: Identities,
        started_at: float,
        proxy_user_header: str | None = None,
        proxy_secret: str | None = None,
    ) -> None:
        self.identities = identities
        self.started_at = started_at
        self.proxy_user_header = proxy_user_header.lower() if proxy_user_header else None
        self.proxy_secret = proxy_secret
        self._cache: dict[str, tuple[Principal, str] | None] = {}
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Forget cached keys: a disabled user or a revoked key stops working at once."""
        with self._lock:
            self._cache.clear()

    def _credentials(self, key_id: str) -> tuple[Principal, str] | None:
        with self._lock:
            if key_id in self._cache:
                return self._cache[key_id]
        found = self.identities.credentials(key_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = found
        return found

    def precheck(self, headers: Mapping[str, str], private: bool = False) -> None:
        """What can be checked before a byte of the body is read (an unauthenticated
        request is refused before any work): a bearer token, HTTP basic or a proxy whole,
        a signed request's key, timestamp and nonce (its signature covers the body)."""
        if self.proxy_secret and "x-kran-proxy-secret" in headers:
            self._from_proxy(headers)
            return
        scheme = headers.get("authorization", "")[:7].lower()
        if scheme == "bearer ":
            self._from_bearer(headers)
            return
        if scheme.startswith("basic "):
            self._from_basic(headers, private)
            return
        self._signed(headers)

    def authenticate(
        self,
        headers: Mapping[str, str],
        method: str,
        path: str,
        query: str,
        body_sha256: str,
        private: bool = False,
    ) -> Principal:
        """The principal of a request, or Unauthorized with a short reason (never the
        string to sign or a secret). `body_sha256`: hex SHA-256 of the request body;
        `private`: it came over TLS or from this machine (where HTTP basic is taken)."""
        if self.proxy_secret and "x-kran-proxy-secret" in headers:
            return self._from_proxy(headers)
        scheme = headers.get("authorization", "")[:7].lower()
        if scheme == "bearer ":
            return self._from_bearer(headers)
        if scheme.startswith("basic "):
            return self._from_basic(headers, private)
        key_id, ts, nonce, given, (principal, secret) = self._signed(headers)
        if not signature_matches(sign_digest(secret, method, path, query, body_sha256, ts, nonce), given):
            raise Unauthorized("bad signature")
        now = time.time()
        with self._lock:
            if key_id + nonce in self._nonces:
                raise Unauthorized("nonce already used")
            self._nonces[key_id + nonce] = now + NONCE_TTL_S
            if len(self._nonces) > 100_000 or int(now) % 60 == 0:
                self._nonces = {k: exp for k, exp in self._nonces.items() if exp > now}
        return principal

    def _from_bearer(self, headers: Mapping[str, str]) -> Principal:
        key_id, _, secret = headers.get("authorization", "")[7:].strip().partition(".")
        return self.verify_key(key_id, secret, "invalid token")

    def verify_key(self, key_id: str, secret: str, refusal: str = "invalid key id or secret") -> Principal:
        """The principal of a usable key whose secret this is (a bearer token, a web sign-in)."""
        found = self._credentials(key_id)
        if found is None or not hmac.compare_digest(found[1].encode(), secret.encode()):
            raise Unauthorized(refusal)
        return found[0]

    def _from_basic(self, headers: Mapping[str, str], private: bool) -> Principal:
        """HTTP basic, as TES clients send it: the key id as the user name, the secret as
        the password. A password in the clear is taken only over TLS or on loopback."""
        if not private:
            raise Unauthorized("HTTP basic credentials are taken only over TLS or from this machine")
        try:
            pair = base64.b64decode(headers["authorization"][6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized("bad basic credentials") from None
        key_id, _, secret = pair.partition(":")
        return self.verify_key(key_id, secret)

    def _signed(self, headers: Mapping[str, str]) -> tuple[str, str, str, str, tuple[Principal, str]]:
        """A signed request's key (known), timestamp (fresh) and nonce (well formed)."""
        key_id = headers.get("x-kran-key", "")
        if not key_id:
            raise Unauthorized("authentication required")
        ts, nonce, given = (
            headers.get("x-kran-timestamp", ""),
            headers.get("x-kran-nonce", ""),
            headers.get("x-kran-signature", ""),
        )
        if not (16 <= len(nonce) <= 128) or not given:
            raise Unauthorized("missing or bad nonce or signature")
        found = self._credentials(key_id)
        if found is None:
            raise Unauthorized("unknown or revoked key")
        problem = timestamp_problem(ts, time.time(), self.started_at)
        if problem:
            raise Unauthorized(problem)
        return key_id, ts, nonce, given, found

    def _from_proxy(self, headers: Mapping[str, str]) -> Principal:
        assert self.proxy_secret is not None
        given = headers.get("x-kran-proxy-secret", "")
        if not hmac.compare_digest(
            hashlib.sha256(given.encode()).digest(), hashlib.sha256(self.proxy_secret.encode()).digest()
        ):
            raise Unauthorized("bad proxy secret")
        name = headers.get(self.proxy_user_header or "", "")
        user = self.identities.get_user(name) if name else None
        if user is None or user.disabled:
            raise Unauthorized("unknown or disabled user")
        return Principal(name, user.role)


def require_admin(who: Principal) -> None:
    if not who.is_admin:
        raise Forbidden("admin only")


def add_user(auth: Authenticator, who: Principal, name: str, role: str, now: float) -> None:
    require_admin(who)
    if not name or len(name) > 100 or not all(c.isalnum() or c in "_.@-" for c in name):
        raise InvalidInput("a user name is 1-100 of letters, digits, _ . @ -", "name")
    try:
        auth.identities.add_user(name, Role(role), now)
    except ValueError:
        raise InvalidInput("role must be admin, user or service", "role") from None


def set_disabled(auth: Authenticator, who: Principal, name: str, disabled: bool) -> None:
    require_admin(who)
    auth.identities.set_disabled(name, disabled)
    auth.invalidate()


def create_key(auth: Authenticator, who: Principal, user: str, now: float) -> tuple[str, str]:
    require_admin(who)
    return auth.identities.create_key(user, now)


def revoke_key(auth: Authenticator, who: Principal, key_id: str) -> None:
    require_admin(who)
    auth.identities.revoke_key(key_id)
    auth.invalidate()


def on_behalf(auth: Authenticator, who: Principal, user: str | None) -> tuple[str, str | None]:
    """(owner, submitted_by) of a submission; only services and admins act for others."""
    if user is None or user == who.user:
        return who.user, None
    if who.role not in (Role.SERVICE, Role.ADMIN):
        raise Forbidden("only services submit on behalf of other users")
    target = auth.identities.get_user(user)
    if target is None or target.disabled:
        raise NotFound(f"user {user!r} not found")
    refusal = act_for_refusal(who, user, target.role)
    if refusal:
        raise Forbidden(refusal)
    return user, who.user


def bootstrap_admin(auth: Authenticator, data_dir: Path, url: str, now: float) -> Path | None:
    """On an empty store: create the admin and write its client config (mode 0600) to
    ~/.config/kran/client.toml if that does not exist yet, else beside the data dir."""
    if auth.identities.count_users() > 0:
        return None
    auth.identities.add_user("admin", Role.ADMIN, now)
    key_id, secret = auth.identities.create_key("admin", now)
    home = Path(os.environ.get("HOME", "/root")) / ".config" / "kran" / "client.toml"
    path = home if not home.exists() else data_dir / "client.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'url = "{url}"\nkey_id = "{key_id}"\nsecret = "{secret}"\n')
    return path


def read_client_config(path: Path) -> dict[str, str]:
    """A client config, refused if others may read it."""
    if path.stat().st_mode & 0o077:
        raise InvalidInput(f"{path} is readable by others: chmod 600 {path}", "config")
    data = tomllib.loads(path.read_text())
    return {k: str(v) for k, v in data.items() if k in ("url", "key_id", "secret", "ca_cert")}

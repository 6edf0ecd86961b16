"""Identities and the signed-request scheme (docs/auth.md): pure functions.

String to sign, one field per line:

    KRAN1-HMAC-SHA256
    <METHOD>
    <path>?<query exactly as sent, may be empty>
    <hex SHA-256 of the body>
    <timestamp, integer seconds since the epoch>
    <nonce>

signature = hex(HMAC-SHA256(secret, string_to_sign)).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

SCHEME = "KRAN1-HMAC-SHA256"
MAX_SKEW_S = 300


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    user: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


def string_to_sign(method: str, path: str, query: str, body_sha256: str, timestamp: str, nonce: str) -> str:
    return "\n".join((SCHEME, method.upper(), f"{path}?{query}", body_sha256, timestamp, nonce))


def sign(secret: str, method: str, path: str, query: str, body: bytes, timestamp: str, nonce: str) -> str:
    return sign_digest(secret, method, path, query, hashlib.sha256(body).hexdigest(), timestamp, nonce)


def sign_digest(secret: str, method: str, path: str, query: str, body_sha256: str, timestamp: str, nonce: str) -> str:
    """`sign` for a body hashed while it streamed in (uploads)."""
    text = string_to_sign(method, path, query, body_sha256, timestamp, nonce)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def signature_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def timestamp_problem(timestamp: str, now: float, not_before: float) -> str | None:
    """Why a request timestamp is refused, or None. `not_before` (the server's start) keeps
    requests signed before a restart, whose nonces the server no longer knows, out."""
    try:
        ts = int(timestamp)
    except ValueError:
        return "bad timestamp"
    if abs(now - ts) > MAX_SKEW_S:
        return "timestamp skew over 5 minutes"
    if ts < int(not_before) - 1:
        return "request signed before the server started"
    return None


def can_see(who: Principal, owner: str, submitted_by: str | None = None) -> bool:
    """Admins see everything; users their own; a service what it submitted."""
    return who.is_admin or owner == who.user or (who.role == Role.SERVICE and submitted_by == who.user)


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: Role
    disabled: bool
    created_at: float


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    user: str
    revoked: bool
    created_at: float


def user_job_identity(user_id: int, uid_range: tuple[int, int]) -> tuple[int, int]:
    """The uid (and the gid, the same number) the jobs of kran user `user_id` run as: one of
    their own, so no two users' jobs can read or signal each other's processes and files."""
    first, last = uid_range
    uid = first + user_id
    if user_id < 1 or uid > last:
        raise ValueError(f"user id {user_id} has no uid in local.job_uids {first}-{last}: widen the range")
    return uid, uid

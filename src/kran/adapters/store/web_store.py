"""The web dashboard's sessions and one-time sign-in links, by the SHA-256 of their tokens.
A session is good while it has not expired, its user is enabled and the key it was opened
with (if any) is not revoked: all three read in the one query of each request."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update

from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import api_keys, users, web_links, web_sessions
from kran.domain.auth import Principal, Role


class SqlWebSessions:
    def __init__(self, store: SqlStore) -> None:
        self._db = store.db

    def open(self, token_hash: str, user: str, key_id: str | None, csrf: str, now: float, expires: float) -> None:
        with self._db.unit_of_work() as uow:
            uow.conn.execute(
                insert(web_sessions).values(
                    token_hash=token_hash, user=user, key_id=key_id, csrf=csrf, created_at=now, expires_at=expires
                )
            )

    def find(self, token_hash: str, now: float) -> tuple[Principal, str] | None:
        """The principal and CSRF token of a live session."""
        q = (
            select(users.c.name, users.c.role, web_sessions.c.csrf)
            .select_from(web_sessions)
            .join(users, users.c.name == web_sessions.c.user)
            .outerjoin(api_keys, api_keys.c.key_id == web_sessions.c.key_id)
            .where(
                web_sessions.c.token_hash == token_hash,
                web_sessions.c.expires_at > now,
                users.c.disabled.is_(False),
                or_(
                    web_sessions.c.key_id.is_(None), and_(api_keys.c.key_id.is_not(None), api_keys.c.revoked.is_(False))
                ),
            )
        )
        with self._db.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else (Principal(row[0], Role(row[1])), row[2])

    def close(self, token_hash: str) -> None:
        with self._db.unit_of_work() as uow:
            uow.conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == token_hash))

    def add_link(self, token_hash: str, user: str, by: str, key_id: str | None, now: float, expires: float) -> None:
        with self._db.unit_of_work() as uow:
            uow.conn.execute(
                insert(web_links).values(
                    token_hash=token_hash, user=user, created_by=by, key_id=key_id, created_at=now, expires_at=expires
                )
            )

    def _usable_link(self, token_hash: str, now: float) -> Any:
        return (
            select(web_links.c.user, web_links.c.key_id)
            .join(users, users.c.name == web_links.c.user)
            .where(
                web_links.c.token_hash == token_hash,
                web_links.c.used_at.is_(None),
                web_links.c.expires_at > now,
                users.c.disabled.is_(False),
            )
        )

    def peek_link(self, token_hash: str, now: float) -> str | None:
        """Whom an unused link signs in, without using it."""
        with self._db.connect() as conn:
            row = conn.execute(self._usable_link(token_hash, now)).first()
        return None if row is None else str(row[0])

    def take_link(self, token_hash: str, now: float) -> tuple[str, str | None] | None:
        """The user (enabled) of an unused, unexpired link and the key that made it; the
        link is used up by this (once only)."""
        with self._db.unit_of_work() as uow:
            row = uow.conn.execute(self._usable_link(token_hash, now)).first()
            if row is None:
                return None
            done = uow.conn.execute(
                update(web_links)
                .where(web_links.c.token_hash == token_hash, web_links.c.used_at.is_(None))
                .values(used_at=now)
            )
            return (str(row[0]), row[1]) if done.rowcount == 1 else None

    def purge(self, now: float) -> None:
        with self._db.unit_of_work() as uow:
            uow.conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
            uow.conn.execute(delete(web_links).where(web_links.c.expires_at <= now - 86400))

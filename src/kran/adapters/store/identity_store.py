"""Users and API keys. Secrets are stored encrypted (Fernet, key in the data dir, mode
0600), not hashed: HMAC request signing needs the secret itself on the server."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from kran.adapters.store.sql_store import SqlStore
from kran.adapters.store.tables import api_keys, users, web_links, web_sessions
from kran.domain.auth import KeyRecord, Principal, Role, UserRecord
from kran.errors import Conflict, NotFound


def load_master_key(data_dir: Path) -> bytes:
    path = data_dir / "master.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return path.read_bytes().strip()


class SqlIdentities:
    def __init__(self, store: SqlStore, master_key: bytes) -> None:
        self._db = store.db
        self._fernet = Fernet(master_key)

    def count_users(self) -> int:
        with self._db.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(users)).scalar_one())

    def add_user(self, name: str, role: Role, now: float) -> UserRecord:
        try:
            with self._db.unit_of_work() as uow:
                conn = uow.conn
                conn.execute(insert(users).values(name=name, role=role.value, disabled=False, created_at=now))
        except IntegrityError:
            raise Conflict(f"user {name!r} exists already") from None
        return UserRecord(name, role, False, now)

    def users(self) -> list[UserRecord]:
        with self._db.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).mappings().all()
        return [UserRecord(r["name"], Role(r["role"]), bool(r["disabled"]), r["created_at"]) for r in rows]

    def user_id(self, name: str) -> int | None:
        with self._db.connect() as conn:
            found = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
        return None if found is None else int(found)

    def get_user(self, name: str) -> UserRecord | None:
        return next((u for u in self.users() if u.name == name), None)

    def set_disabled(self, name: str, disabled: bool) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            if conn.execute(update(users).where(users.c.name == name).values(disabled=disabled)).rowcount != 1:
                raise NotFound(f"user {name!r} not found")
            if disabled:  # their dashboard sessions end for good: enabling them again revives none
                conn.execute(delete(web_sessions).where(web_sessions.c.user == name))
                conn.execute(delete(web_links).where(web_links.c.user == name, web_links.c.used_at.is_(None)))

    def create_key(self, user: str, now: float) -> tuple[str, str]:
        # the secret never starts with "-": a tool's option parser would read `--password -x...` as an option
        key_id, secret = "kk_" + secrets.token_hex(10), "ks_" + secrets.token_urlsafe(32)
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            uid = conn.execute(select(users.c.id).where(users.c.name == user)).scalar_one_or_none()
            if uid is None:
                raise NotFound(f"user {user!r} not found")
            conn.execute(
                insert(api_keys).values(
                    key_id=key_id,
                    user_id=uid,
                    secret_enc=self._fernet.encrypt(secret.encode()).decode(),
                    revoked=False,
                    created_at=now,
                )
            )
        return key_id, secret

    def keys(self, user: str | None = None) -> list[KeyRecord]:
        q = select(api_keys.c.key_id, users.c.name, api_keys.c.revoked, api_keys.c.created_at).join(
            users, users.c.id == api_keys.c.user_id
        )
        if user is not None:
            q = q.where(users.c.name == user)
        with self._db.connect() as conn:
            return [KeyRecord(r[0], r[1], bool(r[2]), r[3]) for r in conn.execute(q.order_by(api_keys.c.created_at))]

    def revoke_key(self, key_id: str) -> None:
        with self._db.unit_of_work() as uow:
            conn = uow.conn
            if conn.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(revoked=True)).rowcount != 1:
                raise NotFound(f"key {key_id!r} not found")
            # dashboard sessions opened with the key, or with a link it made, end with it
            conn.execute(delete(web_sessions).where(web_sessions.c.key_id == key_id))
            conn.execute(delete(web_links).where(web_links.c.key_id == key_id, web_links.c.used_at.is_(None)))

    def credentials(self, key_id: str) -> tuple[Principal, str] | None:
        """The principal and secret of a usable key; None if unknown, revoked or disabled."""
        q = (
            select(users.c.name, users.c.role, users.c.disabled, api_keys.c.secret_enc, api_keys.c.revoked)
            .join(users, users.c.id == api_keys.c.user_id)
            .where(api_keys.c.key_id == key_id)
        )
        with self._db.connect() as conn:
            row = conn.execute(q).first()
        if row is None or row[2] or row[4]:
            return None
        return Principal(row[0], Role(row[1])), self._fernet.decrypt(row[3].encode()).decode()

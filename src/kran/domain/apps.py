"""Apps: named execution environments, and how a job's own options combine with them.

An app version is a frozen set of job defaults (image, files, resources, env, user,
grace, volume). A job naming the app is merged with the current version at submit
time and records that version, so a re-load never changes a job already submitted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kran.domain.jobs import JOB_FIELDS

APP_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,62}")
VOLUME_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
MAX_VOLUME_MB = 1024 * 1024  # 1 TiB
MIN_VOLUME_MB = 8  # below this ext4 has no room for its own metadata
# job fields an app may give defaults for: the job's own value wins (env and files add up)
DEFAULTABLE = tuple(f.name for f in JOB_FIELDS if f.app)
# uids below this are system accounts: only an admin's app may run as one


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    size_mb: int


@dataclass(frozen=True)
class AppRecord:
    name: str
    owner: str
    shared: bool  # whether others may run it
    enabled: bool
    version: int
    defaults: dict[str, Any]  # JobSubmit-shaped fields, those in DEFAULTABLE
    run_as: tuple[int, int] | None
    volume: VolumeSpec | None
    created_at: float
    updated_at: float
    volume_key: str | None = None  # where its volume lives (see volume_key_for)


class AppError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_app_name(name: str) -> str:
    if not APP_NAME.fullmatch(name):
        raise AppError("name", f"{name!r}: use 1-63 of a-z 0-9 _ . - starting with a letter or digit")
    return name


def parse_volume(text: str) -> VolumeSpec:
    """NAME:SIZE_MB, e.g. `refdata:2048`."""
    name, sep, size = text.partition(":")
    if not sep or not VOLUME_NAME.fullmatch(name):
        raise AppError("volume", f"{text!r}: expected NAME:SIZE_MB with NAME of a-z 0-9 _ -")
    try:
        size_mb = int(size)
    except ValueError:
        raise AppError("volume", f"{text!r}: SIZE_MB must be a whole number of MiB") from None
    if not MIN_VOLUME_MB <= size_mb <= MAX_VOLUME_MB:
        raise AppError("volume", f"size must be between {MIN_VOLUME_MB} and {MAX_VOLUME_MB} MiB")
    return VolumeSpec(name, size_mb)


def parse_user(text: str | int, is_admin: bool) -> tuple[int, int]:
    """UID or UID:GID (numbers: names differ between the server and the images)."""
    uid_text, _, gid_text = str(text).partition(":")
    try:
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else uid
    except ValueError:
        raise AppError("user", f"{text!r}: expected UID or UID:GID (numbers)") from None
    if not (0 <= uid < 2**31 and 0 <= gid < 2**31):
        raise AppError("user", f"{text!r}: out of range")
    if not is_admin:  # kran.domain.policy.app_user_refusal says why
        raise AppError("user", "only an admin may give an app a user (--user)")
    return uid, gid


def volume_key_for(owner: str, app: str, volume: str) -> str:
    """Where a new app's volume lives, below the volumes dir: `~OWNER/APP/VOLUME`, apart
    from every other owner's (names are per owner) and from the `APP/VOLUME` of apps loaded
    before that (app names start with a letter or digit, never `~`). The owner is
    percent-encoded (no `/`; `~` first, so never `.` or `..`), hashed when long: the hash
    after a `=`, which an encoded name never holds (it would be `%3D`), so no user's name
    encodes to another's hash."""
    safe = quote(owner, safe="")
    if len(safe) > 64:
        safe = "=" + hashlib.sha256(owner.encode()).hexdigest()[:40]
    return f"~{safe}/{app}/{volume}"


def volume_shown(key: str) -> str:
    """A volume as its users know it: APP/VOLUME (its owner's own)."""
    return key.split("/", 1)[1] if key.startswith("~") else key


def pick_app(candidates: Sequence[AppRecord], users: Sequence[str]) -> AppRecord | None:
    """What a bare app name means for a job of `users` (the job's owner, then the one
    submitting for them): the first user's own app of that name, then a shared one.
    Another user's private app is never picked: for them it does not exist."""
    for user in users:
        for app in candidates:
            if app.owner == user:
                return app
    return next((a for a in candidates if a.shared), None)


def may_use(app: AppRecord, user: str, is_admin: bool) -> bool:
    return app.shared or app.owner == user or is_admin


def may_modify(app: AppRecord, user: str, is_admin: bool) -> bool:
    return app.owner == user or is_admin


def refuse_reason(app: AppRecord | None, name: str) -> str | None:
    """Why a new job cannot use the app, or None."""
    if app is None:
        return f"app {name!r} is not loaded"
    if not app.enabled:
        return f"app {name!r} is disabled; its owner can `kran app enable {name}`"
    return None


def merge_job(app: AppRecord, job: dict[str, Any]) -> dict[str, Any]:
    """The job's fields over the app's defaults (only fields the job set count as set).

    env: the app's, then the job's on top; files: the app's, then the job's; labels get
    `kran.app` so usage can be grouped by app.
    """
    merged = {k: v for k, v in app.defaults.items() if k in DEFAULTABLE}
    merged.update({k: v for k, v in job.items() if v is not None and k not in ("env", "files", "cached_files")})
    merged["env"] = {**app.defaults.get("env", {}), **(job.get("env") or {})}
    for key in ("files", "cached_files"):
        merged[key] = [*app.defaults.get(key, []), *(job.get(key) or [])]
    merged["labels"] = {**(job.get("labels") or {}), "kran.app": app.name}
    return merged

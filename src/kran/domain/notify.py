"""Notifications (issue 20.7): which events a job or webhook wants, where they may go, the
payload, the signature and the retry backoff. Pure functions.

Events: `job.started`, `job.succeeded`, `job.failed` (any end but succeeded: failed, killed,
timed_out, lost, dependency_failed), `array.ended` and `workflow.ended`. A job's `--notify-on` takes Slurm's
--mail-type words: `end` (succeeded and failed, the default), `start`, `fail`, `all`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import unquote, urlsplit

from kran.domain.states import JobState

EVENT_TYPES = ("job.started", "job.succeeded", "job.failed", "array.ended", "workflow.ended")
NOTIFY_ON = {
    "start": ("job.started",),
    "end": ("job.succeeded", "job.failed", "array.ended", "workflow.ended"),
    "fail": ("job.failed",),
    "all": EVENT_TYPES,
}
MAX_ATTEMPTS = 12  # about 1.1 hours of backoff in all
MAX_URL = 2000


def parse_notify_on(text: str | None) -> tuple[str, ...]:
    """`end,start` -> the words, checked; empty or None: ("end",)."""
    words = tuple(w.strip() for w in (text or "").split(",") if w.strip()) or ("end",)
    for w in words:
        if w not in NOTIFY_ON:
            raise ValueError(f"{w!r}: use {', '.join(NOTIFY_ON)}")
    return tuple(dict.fromkeys(words))


def wanted(notify_on: tuple[str, ...], event_type: str) -> bool:
    return any(event_type in NOTIFY_ON[w] for w in notify_on)


def event_type_of(to_state: str) -> str | None:
    """The event a job state change is, or None (queued, starting: no event)."""
    if to_state == JobState.RUNNING:
        return "job.started"
    if to_state == JobState.SUCCEEDED:
        return "job.succeeded"
    if to_state in {s.value for s in JobState} and JobState(to_state).is_final:
        return "job.failed"
    return None


def url_allowed(url: str, prefixes: tuple[str, ...]) -> bool:
    """Does `url` fall under one of the admin's prefixes? Scheme, host and port must be the
    prefix's exactly (`https://hooks.example.org` does not allow `...example.org.evil.net`),
    the path must start with the prefix's path; no user:password@ part."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return False
    if u.scheme not in ("http", "https") or not u.hostname or u.username or u.password or len(url) > MAX_URL:
        return False
    if _leaves_by_dots(u.path):
        return False
    for prefix in prefixes:
        try:
            p = urlsplit(prefix)
            p_port = p.port
        except ValueError:
            continue
        up, pp = u.path or "/", p.path or "/"
        if (
            p.scheme == u.scheme
            and (p.hostname or "") == u.hostname
            and (p_port or _default_port(p.scheme)) == (port or _default_port(u.scheme))
            and up.startswith(pp)
            and (pp.endswith("/") or up == pp or up[len(pp)] == "/")
        ):
            return True
    return False


def _leaves_by_dots(path: str) -> bool:
    """Could the path leave its prefix through dot segments, as the client or a receiver
    reads it? httpx makes `/hooks/../admin` `/admin`; a receiver may decode `%2e`, `%2f`
    (also twice: `%252e`), take `\\` or `;` as a separator."""
    decoded = path
    for _ in range(3):
        decoded = unquote(decoded)
    return any(seg in (".", "..") for seg in re.split(r"[/\\;]", decoded))


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """X-Kran-Signature: `sha256=` HMAC-SHA256 over `TIMESTAMP.BODY` (the timestamp is the
    X-Kran-Timestamp header: a receiver refuses old ones, so a captured request cannot be
    replayed later)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def backoff_s(attempts: int) -> float:
    """Wait before the next try after `attempts` failed ones: 2, 4, 8 ... capped at 15 min."""
    return float(min(2**attempts, 900))

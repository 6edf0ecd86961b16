"""Notifications (issue 20.7): events to the URLs jobs name (--notify) and to the admin's
webhooks, through the store's outbox, delivered off the scheduler (a pool thread), signed,
retried with backoff. At least once: a receiver drops repeats by the event id."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from kran.domain.notify import EVENT_TYPES, MAX_ATTEMPTS, backoff_s, signature, url_allowed
from kran.errors import InvalidInput, NotFound
from kran.ports import Clock, Notifications

log = logging.getLogger("kran.notify")
Post = Callable[[str, bytes, dict[str, str]], int]  # url, body, headers -> HTTP status (raises OSError-like on failure)
PER_TICK = 100


class NotifyService:
    def __init__(
        self, store: Notifications, secret: bytes, prefixes: tuple[str, ...], post: Post, clock: Clock
    ) -> None:
        self.store = store
        self.secret = secret
        self.prefixes = prefixes
        self.post = post
        self.clock = clock

    def check_url(self, url: str, field: str = "notify") -> None:
        if not url_allowed(url, self.prefixes):
            allowed = ", ".join(self.prefixes) or "none: notify.allowed_prefixes is empty"
            raise InvalidInput(f"{field}: {url} is not under a prefix the admin allowed ({allowed})", field)

    def start(self) -> None:
        """At server start: the cursor over events is set before any job of this run."""
        self.store.collect(self.clock.now())

    def tick(self) -> int:
        """Collect new events, deliver what is due; returns how many were delivered."""
        now = self.clock.now()
        self.store.collect(now)
        sent = 0
        for n in self.store.due(now, PER_TICK):
            body = n.payload.encode()
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Kran-Event-Id": n.event_id,
                "X-Kran-Timestamp": stamp,
                "X-Kran-Signature": signature(self.secret, stamp, body),
                "User-Agent": "kran-notify",
            }
            try:
                status = self.post(n.url, body, headers)
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except Exception as e:  # the receiver's fault, never the scheduler's: try again later
                error = f"{type(e).__name__}: {e}"
            if error is None:
                self.store.delivered(n.id, self.clock.now())
                sent += 1
            else:
                attempts = n.attempts + 1
                give_up = attempts >= MAX_ATTEMPTS
                if give_up:
                    log.warning(
                        "notification %s to %s: giving up after %d tries: %s", n.event_id, n.url, attempts, error
                    )
                self.store.retry(n.id, attempts, self.clock.now() + backoff_s(attempts), error, give_up)
        return sent

    # ---- webhooks (admin)

    def add_webhook(self, url: str, event_types: Sequence[str]) -> dict[str, Any]:
        self.check_url(url, "url")
        types = list(dict.fromkeys(event_types)) or list(EVENT_TYPES)
        unknown = [t for t in types if t not in EVENT_TYPES]
        if unknown:
            raise InvalidInput(f"events: {unknown[0]!r} is not one of {', '.join(EVENT_TYPES)}", "events")
        hook_id = self.store.add_webhook(url, types, self.clock.now())
        return {"id": hook_id, "url": url, "events": types}

    def remove_webhook(self, hook_id: int) -> None:
        if not self.store.remove_webhook(hook_id):
            raise NotFound(f"webhook {hook_id} not found")

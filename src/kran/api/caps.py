"""Counts of something users hold open at once (followed logs, long-polls), capped per
user and in all."""

from __future__ import annotations

import threading


class UserCaps:
    def __init__(self, per_user: int, in_all: int) -> None:
        self.per_user = per_user
        self.in_all = in_all
        self._by_user: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, user: str) -> str | None:
        """One more for `user`; else which cap is reached ("user" or "all")."""
        with self._lock:
            if self._by_user.get(user, 0) >= self.per_user:
                return "user"
            if sum(self._by_user.values()) >= self.in_all:
                return "all"
            self._by_user[user] = self._by_user.get(user, 0) + 1
            return None

    def give(self, user: str) -> None:
        with self._lock:
            left = self._by_user.get(user, 1) - 1
            if left:
                self._by_user[user] = left
            else:
                self._by_user.pop(user, None)

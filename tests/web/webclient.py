"""A signed-in browser session over plain HTTP (httpx), for the dashboard's tests that need
no JavaScript: it signs in through the real form and sends the CSRF token as a form would."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import ServerProc

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
PRE = re.compile(r'name="pre" value="([^"]+)"')


class WebClient:
    def __init__(self, server: ServerProc, user: str | None = None) -> None:
        if user is None:
            creds = server.credentials
            key_id, secret = creds["key_id"], creds["secret"]
        else:
            key_id, secret = server.users[user]
        self.http = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
        form = self.http.get("/ui/login")
        pre = PRE.search(form.text)
        assert pre, form.text
        r = self.http.post("/ui/login", data={"key_id": key_id, "secret": secret, "pre": pre.group(1)})
        assert r.status_code == 303, r.text
        self.csrf = self.token()

    def token(self) -> str:
        found = CSRF.search(self.http.get("/ui/jobs").text)
        assert found
        return found.group(1)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        """A form post with the session's CSRF token."""
        return self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kw)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> WebClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

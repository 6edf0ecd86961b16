"""kran's own HTTP client: where the server is, who is asking, errors as messages."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import httpx

DEFAULT_URL = "http://127.0.0.1:9090"


class ClientError(Exception):
    """Something the user should read; the CLI prints it and exits non-zero."""


def server_url() -> tuple[str, str]:
    """The server URL and where it came from."""
    if os.environ.get("KRAN_URL"):
        return os.environ["KRAN_URL"].rstrip("/"), "env KRAN_URL"
    return DEFAULT_URL, "default"


class Client:
    def __init__(self, url: str | None = None, timeout: float = 30.0) -> None:
        self.url = url or server_url()[0]
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "anonymous"
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers={"X-Kran-User": user})
        ctx = click.get_current_context(silent=True)
        if ctx is not None:  # closed when the command ends
            ctx.call_on_close(self.http.close)

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            try:
                msg = resp.json().get("error") or resp.text
            except ValueError:
                msg = resp.text
            raise ClientError(f"{msg} (HTTP {resp.status_code})")
        return resp

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach kran at {self.url}: {e}") from None
        return self._check(resp).json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    @contextmanager
    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[httpx.Response]:
        try:
            with self.http.stream("GET", path, params=params, timeout=httpx.Timeout(30, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                yield resp
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach kran at {self.url}: {e}") from None

"""kran's own HTTP client: where the server is, signed requests, errors as messages.

Settings come from KRAN_URL, KRAN_KEY_ID, KRAN_SECRET, KRAN_CA_CERT (environment) over
~/.config/kran/client.toml (url, key_id, secret, ca_cert), which is refused if others
may read it. Every request is signed (docs/auth.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import httpx

from kran.domain.auth import sign_digest
from kran.errors import InvalidInput
from kran.services.auth import read_client_config

DEFAULT_URL = "http://127.0.0.1:9090"


def unreachable(url: str, e: Exception) -> ClientError:
    hint = ""
    if isinstance(e, httpx.ConnectError):  # nothing listens there
        hint = " (is the server up? `kran serve` starts the embedded one; KRAN_URL names another)"
    return ClientError(f"cannot reach kran at {url}: {e}{hint}")


class ClientError(Exception):
    """Something the user should read; the CLI prints it and exits non-zero."""


def owned(base: str, name: str) -> tuple[str, dict[str, str]]:
    """NAME is one's own schedule or app; OWNER/NAME another user's (admins, or a shared
    app): the item's path below `base` and the query that says whose."""
    owner, _, bare = name.rpartition("/")
    return f"{base}/{bare}", {"owner": owner} if owner else {}


def config_path() -> Path:
    return Path(os.environ.get("KRAN_CLIENT_CONFIG", Path.home() / ".config" / "kran" / "client.toml"))


def client_settings() -> dict[str, tuple[str, str]]:
    """Each client setting with where it came from."""
    out: dict[str, tuple[str, str]] = {"url": (DEFAULT_URL, "default")}
    path = config_path()
    if path.exists():
        try:
            for k, v in read_client_config(path).items():
                out[k] = (v, f"file {path}")
        except InvalidInput as e:
            raise ClientError(str(e)) from None
        except (OSError, ValueError) as e:
            raise ClientError(f"cannot read {path}: {e}") from None
    for key in ("url", "key_id", "secret", "ca_cert"):
        var = f"KRAN_{key.upper()}"
        if os.environ.get(var):
            out[key] = (os.environ[var], f"env {var}")
    return out


def body_sha256(request: httpx.Request) -> str:
    """The hex SHA-256 of the request's body. An upload's body is streamed: hashed in a
    first pass over it, then sent in a second (httpx reads each file again from its
    start), never held whole in memory (a 300 MB input had the CLI at 649 MB)."""
    try:
        return hashlib.sha256(request.content).hexdigest()
    except httpx.RequestNotRead:
        # httpx's own multipart body (files=) reads its files again from the start on each
        # pass; any other stream may be one-pass: read it
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return hashlib.sha256(request.read()).hexdigest()
    stream = request.stream
    if not isinstance(stream, httpx.SyncByteStream):
        return hashlib.sha256(request.read()).hexdigest()
    digest = hashlib.sha256()
    for chunk in stream:
        digest.update(chunk)
    return digest.hexdigest()


class SignedAuth(httpx.Auth):
    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id, self.secret = key_id, secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        ts, nonce = str(int(time.time())), secrets.token_hex(16)
        path, _, query = request.url.raw_path.decode("latin-1").partition("?")
        request.headers["X-Kran-Key"] = self.key_id
        request.headers["X-Kran-Timestamp"] = ts
        request.headers["X-Kran-Nonce"] = nonce
        signature = sign_digest(self.secret, request.method, path, query, body_sha256(request), ts, nonce)
        request.headers["X-Kran-Signature"] = signature
        yield request


class Client:
    def __init__(self, url: str | None = None, timeout: float = 30.0) -> None:
        settings = client_settings()
        self.url = (url or settings["url"][0]).rstrip("/")
        auth = None
        if "key_id" in settings and "secret" in settings:
            auth = SignedAuth(settings["key_id"][0], settings["secret"][0])
        verify: Any = settings["ca_cert"][0] if "ca_cert" in settings else True
        self.http = httpx.Client(base_url=self.url, timeout=timeout, auth=auth, verify=verify)
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
            raise unreachable(self.url, e) from None
        return self._check(resp).json()

    def submit(self, path: str, body: Any, tries: int = 6, files: Callable[[ExitStack], Any] | None = None) -> Any:
        """POST a submission with an Idempotency-Key, retried while the connection fails
        (a server restarting, a response lost): the server stores it once whatever happens.
        With `files` (which opens the upload's files on the stack it is given, again for
        each try), a multipart upload of `body` as its `job` field."""
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        for n in range(tries):
            try:
                if files is None:
                    return self._check(self.http.post(path, json=body, headers=headers)).json()
                with ExitStack() as stack:
                    data = {"job": json.dumps(body)}
                    resp = self.http.post(path, data=data, files=files(stack), headers=headers, timeout=None)
                return self._check(resp).json()
            except httpx.TransportError as e:
                if n == tries - 1:
                    raise unreachable(self.url, e) from None
                time.sleep(min(0.5 * 2**n, 8.0))

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    @contextmanager
    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[httpx.Response]:
        try:
            with self.http.stream("GET", path, params=params, timeout=httpx.Timeout(30, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                yield resp
        except httpx.HTTPError as e:
            raise unreachable(self.url, e) from None

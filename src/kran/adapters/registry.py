"""Registry HTTP API v2 client (httpx): resolve a reference to its digest and size.

Anonymous, basic and bearer-token auth (the token endpoint from the registry's
WWW-Authenticate challenge); Docker v2 and OCI manifests, manifest lists and OCI indexes
(the entry for the node's platform). Errors name the image and the registry's answer.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from kran.adapters.files import addresses_of, pinned
from kran.domain.datafiles import address_refused
from kran.domain.images import ImageInfo, ImageRef, pick_platform
from kran.errors import RegistryError

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join((MANIFEST, MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX))
INDEXES = (MANIFEST_LIST, OCI_INDEX)
IN_FLIGHT = 8  # registry lookups at once (a slow registry holds a thread for each)
MAX_BODY = 4 << 20  # a manifest or token answer (real ones are a few KiB); a registry names itself in an image


class RegistryClient:
    def __init__(
        self,
        credentials: Callable[[], dict[str, tuple[str, str]]] = dict,
        insecure: frozenset[str] = frozenset(),
        timeout_s: float = 30.0,
    ) -> None:
        self.credentials = credentials
        self.insecure = insecure
        self.timeout_s = timeout_s
        self._in_flight = threading.BoundedSemaphore(IN_FLIGHT)

    def _base(self, registry: str) -> str:
        host = registry.split(":")[0]
        plain = registry in self.insecure or host == "localhost" or host.startswith("127.")
        return f"{'http' if plain else 'https'}://{registry}"

    def resolve(self, ref: ImageRef, arch: str = "amd64") -> ImageInfo:
        """The image's digest and size. At most IN_FLIGHT lookups at once (each holds the
        thread of a submit while a registry, which an image names, takes its time): past
        that the size stays unknown, as for a registry that cannot be reached."""
        if not self._in_flight.acquire(blocking=False):
            raise RegistryError(f"{ref}: {IN_FLIGHT} registry lookups under way: size not looked up", answered=False)
        try:
            return self._resolve(ref, arch)
        except (ValueError, ArithmeticError, httpx.InvalidURL) as e:  # ("size": 1e999, a digest with controls, ...)
            raise RegistryError(f"{ref}: {ref.registry} sent an answer kran cannot use ({type(e).__name__})") from None
        finally:
            self._in_flight.release()

    def _resolve(self, ref: ImageRef, arch: str) -> ImageInfo:
        with httpx.Client(base_url=self._base(ref.registry), timeout=self.timeout_s) as http:
            auth = _Auth(http, ref, self.credentials().get(ref.registry), time.monotonic() + self.timeout_s)
            manifest, media, digest = self._manifest(auth, ref, ref.reference)
            index_digest = None
            if media in INDEXES:
                index_digest = digest
                entries = manifest.get("manifests")
                if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
                    raise RegistryError(f"{ref}: {ref.registry} sent a malformed index")
                try:
                    entry = pick_platform(entries, "linux", arch)
                except ValueError as e:
                    raise RegistryError(f"{ref}: {e}") from None
                if not isinstance(entry.get("digest"), str):
                    raise RegistryError(f"{ref}: {ref.registry} sent an index entry without a digest")
                manifest, media, digest = self._manifest(auth, ref, str(entry["digest"]))
            try:
                layers = tuple((str(lay["digest"]), int(lay["size"])) for lay in manifest.get("layers", []))
                config = int(manifest.get("config", {}).get("size", 0))
            except (AttributeError, KeyError, TypeError, ValueError):
                raise RegistryError(f"{ref}: {ref.registry} sent a malformed manifest") from None
            return ImageInfo(str(ref), digest, config + sum(s for _, s in layers), layers, media, index_digest)

    def check_login(self, registry: str, creds: tuple[str, str] | None = None) -> None:
        """Raise RegistryError unless the credentials (given, or stored for `registry`) are accepted."""
        probe = ImageRef(registry, "kran/login-check", "latest", None)
        with httpx.Client(base_url=self._base(registry), timeout=self.timeout_s) as http:
            auth = _Auth(http, probe, creds or self.credentials().get(registry), time.monotonic() + self.timeout_s)
            r = auth.get("/v2/", {})
            if r.status_code == 401:
                raise RegistryError(f"{registry}: the registry refused the credentials (HTTP 401)")
            if r.status_code >= 400:
                raise RegistryError(f"{registry}: HTTP {r.status_code} on /v2/")

    def _manifest(self, auth: _Auth, ref: ImageRef, reference: str) -> tuple[Any, str, str]:
        r = auth.get(f"/v2/{ref.repository}/manifests/{reference}", {"Accept": ACCEPT})
        if r.status_code == 401:
            raise RegistryError(f"{ref}: unauthorized by {ref.registry} (wrong or missing credentials)")
        if r.status_code == 404:
            raise RegistryError(f"{ref}: not found in {ref.registry} ({_errors(r)})")
        if r.status_code >= 400:
            raise RegistryError(f"{ref}: {ref.registry} answered HTTP {r.status_code} ({_errors(r)})")
        media = r.headers.get("content-type", "").split(";")[0]
        try:
            body = r.json()
        except ValueError:
            raise RegistryError(f"{ref}: {ref.registry} sent a manifest that is not JSON") from None
        if not isinstance(body, dict):
            raise RegistryError(f"{ref}: {ref.registry} sent a malformed manifest")
        media = body.get("mediaType") or media
        digest = r.headers.get("docker-content-digest") or reference
        return body, media, digest


class _Auth:
    """Requests with the right credentials: basic, or a bearer token fetched on the first 401;
    all of them answered by `deadline` (monotonic), the lookup's time in all."""

    def __init__(self, http: httpx.Client, ref: ImageRef, creds: tuple[str, str] | None, deadline: float) -> None:
        self.http, self.ref, self.creds, self.deadline = http, ref, creds, deadline
        self.header: str | None = None

    def get(self, path: str, headers: dict[str, str]) -> _Answer:
        try:
            r = self._get(path, headers)
            if r.status_code == 401 and self.header is None:
                self.header = self._challenge(r.headers.get("www-authenticate", ""), r.peer)
                if self.header is not None:
                    r = self._get(path, headers)
            return r
        except httpx.HTTPError as e:
            raise RegistryError(f"{self.ref}: cannot reach {self.ref.registry}: {e}", answered=False) from None

    def _get(self, path: str, headers: dict[str, str]) -> _Answer:
        h = dict(headers)
        if self.header:
            h["Authorization"] = self.header
        return _read(self.ref, self.http.stream("GET", path, headers=h, timeout=self._left()), self.deadline)

    def _left(self) -> float:
        """Each request's timeout (httpx's is per read): what is left of the lookup's time."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RegistryError(f"{self.ref}: {self.ref.registry} took too long to answer", answered=False)
        return left

    def _challenge(self, header: str, peer: str | None) -> str | None:
        """The Authorization header for the registry's challenge; its token service is asked
        at the address checked, or on the registry's own host at the address the challenge
        came from (a name looked up again could point inside by then)."""
        scheme, _, params = header.partition(" ")
        if scheme.lower() == "basic":
            return None if self.creds is None else httpx.BasicAuth(*self.creds)._auth_header
        if scheme.lower() != "bearer":
            return None
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            return None
        try:
            realm = urlsplit(fields["realm"])
            url, host = httpx.URL(fields["realm"]), realm.hostname or ""
        except (ValueError, httpx.InvalidURL):
            raise RegistryError(f"{self.ref}: {self.ref.registry} named a token service by a malformed URL") from None
        why, address = _realm_refused(realm.scheme, host, self.http.base_url.host)
        if why:
            raise RegistryError(f"{self.ref}: {self.ref.registry} named a token service {why}")
        extra = dict[str, Any]()
        if address is None and peer is None and not _literal(host):
            raise RegistryError(f"{self.ref}: {self.ref.registry} hung up before its address was known")
        if address is not None or peer is not None:
            url, extra = pinned(url, address or str(peer))
        query = {"service": fields.get("service", ""), "scope": f"repository:{self.ref.repository}:pull"}
        auth = httpx.BasicAuth(*self.creds) if self.creds else None
        with httpx.Client(auth=auth) as client:
            r = _read(self.ref, client.stream("GET", url, params=query, timeout=self._left(), **extra), self.deadline)
        if r.status_code >= 400:
            raise RegistryError(f"{self.ref}: the token service refused (HTTP {r.status_code})")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except (AttributeError, ValueError):
            raise RegistryError(f"{self.ref}: the token service's answer is not a token") from None
        return f"Bearer {token}" if isinstance(token, str) and token else None


def _realm_refused(scheme: str, host: str, registry_host: str) -> tuple[str | None, str | None]:
    """Why the token service a registry names may not be asked (or None), and the address to
    ask it at when it is elsewhere. An image names its registry, so a registry may be
    anyone's: its token service is asked only on the registry's own host, or over https at a
    public address, the one checked (else a request to any internal address, its answer
    passed on to the registry as the token; a name that resolves to a public address for
    the check and to an internal one for the connect did that too)."""
    if scheme not in ("http", "https"):
        return f"by a {scheme!r} URL", None
    if host == registry_host:
        return None, None
    if scheme != "https":
        return "neither https nor on its own host", None
    try:
        addresses = addresses_of(host, 443)
    except (OSError, UnicodeError) as e:
        return f"that cannot be resolved ({e})", None
    for address in addresses:
        if address_refused(host, address, ()):
            return f"at a non-public address ({address})", None
    return None, addresses[0]


@dataclass(frozen=True)
class _Answer:
    """A registry's answer, read whole but capped (MAX_BODY, and the timeout for it all)."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    peer: str | None = None  # the address it came from

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except RecursionError:  # ([[[[... nested past Python's limit, within the size cap)
            raise ValueError("nested too deep") from None

    @property
    def reason_phrase(self) -> str:
        return httpx.codes.get_reason_phrase(self.status_code)


def _read(ref: ImageRef, request: AbstractContextManager[httpx.Response], deadline: float) -> _Answer:
    """The answer to `request`, refused past MAX_BODY bytes or past `deadline` (monotonic;
    httpx's timeout is per read: a registry sending a byte now and then held a thread for
    ever, and one sending gigabytes filled the server's memory)."""
    with request as r:
        peer = _peer(r)  # (while the connection is open)
        chunks, size = [], 0
        for chunk in r.iter_bytes():
            size += len(chunk)
            if size > MAX_BODY:
                raise RegistryError(f"{ref}: {ref.registry} sent over {MAX_BODY >> 20} MiB for a manifest or token")
            if time.monotonic() > deadline:
                raise RegistryError(f"{ref}: {ref.registry} took too long to answer", answered=False)
            chunks.append(chunk)
        return _Answer(r.status_code, r.headers, b"".join(chunks), peer)


def _literal(host: str) -> bool:
    """Whether `host` is an IP address (nothing to resolve again)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _peer(r: httpx.Response) -> str | None:
    """The address `r` came from (httpcore's stream knows it)."""
    try:
        address = r.extensions["network_stream"].get_extra_info("server_addr")
    except (KeyError, OSError):
        return None
    return str(address[0]) if isinstance(address, tuple) and address else None


def _errors(r: _Answer) -> str:
    try:
        errs = r.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs)[:500] or r.reason_phrase
    except (AttributeError, TypeError, ValueError):
        return r.reason_phrase

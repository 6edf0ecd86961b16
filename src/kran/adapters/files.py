"""Fetching a job's files: http(s) and file:// downloads, checksums, archives, the node cache.

The cache is content-addressed: `cache/blobs/<sha256>` holds the bytes, `cache/urls/<sha256
of the URL>` remembers which blob a URL gave. A URL with `#sha256=` finds its blob without
any request. Blobs are copied (never hard-linked) into working dirs, so a job cannot
change what the next job gets.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from kran.domain.datafiles import CacheEntry, FileSource, address_refused, cache_evictions, host_allowed
from kran.errors import FetchError
from kran.jobfs import Refused, open_regular_beneath, under_root

CHUNK = 1 << 20
MAX_REDIRECTS = 10


def addresses_of(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, once each, in the resolver's order (OSError if none)."""
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def pinned(u: httpx.URL, address: str) -> tuple[httpx.URL, dict[str, Any]]:
    """`u` sent to `address`, as resolved and checked, and what makes the request reach it as
    `u`'s host: its Host header, and the name TLS checks the certificate for (a name
    resolved again at the connect could point elsewhere by then)."""
    host_header = u.netloc.decode("ascii").rpartition("@")[2]
    extra: dict[str, Any] = {"headers": {"Host": host_header}}
    if u.scheme == "https":
        extra["extensions"] = {"sni_hostname": u.host}
    return u.copy_with(host=address), extra


class HttpFetcher:
    def __init__(
        self,
        cache_dir: Path,
        cache_max_bytes: int,
        timeout_s: float,
        file_roots: tuple[Path, ...],
        host_patterns: tuple[str, ...] = (),
    ) -> None:
        self.cache_dir = cache_dir
        self.cache_max_bytes = cache_max_bytes
        self.timeout_s = timeout_s
        self.file_roots = file_roots
        self.host_patterns = host_patterns  # files.fetch_hosts; empty: any host
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._in_use: dict[str, int] = {}

    def fetch_into(self, source: FileSource, workdir: Path, cached: bool) -> None:
        if not cached:
            tmp = workdir / f".kran-fetch-{uuid.uuid4().hex}"
            try:
                self._download(source, tmp)
                _place(source, tmp, workdir, move=True)
            finally:
                tmp.unlink(missing_ok=True)
            return
        blob = self._cached(source)
        try:
            _place(source, blob, workdir, move=False)
        finally:
            self._release(blob.name)

    def fetch_to(self, source: FileSource, dest: Path) -> None:
        """The URL's bytes at `dest` exactly (no archive extracted, no cache)."""
        tmp = dest.with_name(f".kran-fetch-{uuid.uuid4().hex}")
        try:
            self._download(source, tmp)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)

    # ---- downloads

    def _download(self, source: FileSource, dest: Path) -> str:
        """Write the URL's bytes to dest; return their sha256 (checked against the URL's)."""
        digest = hashlib.sha256()
        deadline = time.monotonic() + self.timeout_s
        with open(dest, "wb") as out:
            for chunk in self._chunks(source, deadline):
                digest.update(chunk)
                out.write(chunk)
                if time.monotonic() > deadline:
                    raise FetchError(f"{source.url}: timed out after {self.timeout_s:g}s")
        got = digest.hexdigest()
        if source.sha256 and got != source.sha256:
            raise FetchError(f"{source.url}: sha256 mismatch: expected {source.sha256}, got {got}")
        return got

    def _chunks(self, source: FileSource, deadline: float) -> Iterator[bytes]:
        if source.scheme == "file":
            yield from self._file_chunks(source)
            return
        timeout = httpx.Timeout(min(self.timeout_s, 30.0))
        url = source.url
        try:
            for _ in range(MAX_REDIRECTS + 1):  # each hop's host checked (files.fetch_hosts)
                if not host_allowed(url, self.host_patterns):
                    host = httpx.URL(url).host
                    raise FetchError(f"{source.url}: {host} is not a host downloads may reach (files.fetch_hosts)")
                target, extra = self._pinned(source, url)
                with httpx.Client(timeout=timeout) as http, http.stream("GET", target, **extra) as r:
                    if r.is_redirect and "location" in r.headers:
                        url = str(httpx.URL(url).join(r.headers["location"]))
                        continue
                    if r.status_code != 200:
                        raise FetchError(f"{source.url}: HTTP {r.status_code} {r.reason_phrase}")
                    yield from r.iter_bytes()  # as received: a chunk size would wait for a full chunk
                    return
            raise FetchError(f"{source.url}: more than {MAX_REDIRECTS} redirects")
        except httpx.TimeoutException:
            raise FetchError(f"{source.url}: timed out (no data for {timeout.read:g}s)") from None
        except (httpx.HTTPError, httpx.InvalidURL) as e:  # (InvalidURL: `http://0177.0.0.1/`, not an HTTPError)
            raise FetchError(f"{source.url}: {type(e).__name__}: {e}") from None

    def _pinned(self, source: FileSource, url: str) -> tuple[httpx.URL, dict[str, Any]]:
        """The URL with its host resolved once and checked (`address_refused`): `pinned`."""
        u = httpx.URL(url)
        port = u.port or (443 if u.scheme == "https" else 80)
        try:
            addresses = addresses_of(u.host, port)
        except (OSError, UnicodeError) as e:
            raise FetchError(f"{source.url}: cannot resolve {u.host}: {e}") from None
        for address in addresses:  # every one (a name can give a public and a private one)
            if why := address_refused(u.host, address, self.host_patterns):
                raise FetchError(f"{source.url}: {why}")
        return pinned(u, addresses[0])

    def _file_chunks(self, source: FileSource) -> Iterator[bytes]:
        """Read as root, below a root users may write into: opened beneath it (a link
        swapped in after the check read a root-only file before), a regular file only (a
        FIFO held an engine thread for ever)."""
        found = under_root(unquote(urlsplit(source.url).path), self.file_roots)
        if found is None:
            allowed = ", ".join(str(r) for r in self.file_roots) or "none configured (files.file_url_roots)"
            raise FetchError(f"{source.url}: file:// URLs may only read under: {allowed}")
        try:
            f = open_regular_beneath(*found)
        except Refused as e:
            raise FetchError(f"{source.url}: {e}") from None
        try:
            while chunk := os.read(f.fd, CHUNK):
                yield chunk
        except OSError as e:
            raise FetchError(f"{source.url}: {e.strerror}") from None
        finally:
            os.close(f.fd)

    # ---- the cache

    def _cached(self, source: FileSource) -> Path:
        """The blob for the URL, downloaded once; marked in use until `_release`."""
        url_key = hashlib.sha256(source.url.encode()).hexdigest()
        with self._lock:
            lock = self._locks.setdefault(url_key, threading.Lock())
        blobs, urls, tmp_dir = (self.cache_dir / d for d in ("blobs", "urls", "tmp"))
        with lock:
            digest = source.sha256
            if digest is None and (urls / url_key).exists():
                digest = (urls / url_key).read_text().strip()
            if digest and (blobs / digest).exists():
                self._use(digest)
                os.utime(blobs / digest)
                return blobs / digest
            for d in (blobs, urls, tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
            tmp = tmp_dir / uuid.uuid4().hex
            try:
                digest = self._download(source, tmp)
                tmp.replace(blobs / digest)
            finally:
                tmp.unlink(missing_ok=True)
            (urls / url_key).write_text(digest)
            self._use(digest)
        self._evict()
        return blobs / digest

    def _use(self, digest: str) -> None:
        with self._lock:
            self._in_use[digest] = self._in_use.get(digest, 0) + 1

    def _release(self, digest: str) -> None:
        with self._lock:
            left = self._in_use.get(digest, 1) - 1
            if left:
                self._in_use[digest] = left
            else:
                self._in_use.pop(digest, None)

    def _evict(self) -> None:
        blobs = self.cache_dir / "blobs"
        with self._lock:
            entries = []
            for p in blobs.iterdir():
                st = p.stat()
                entries.append(CacheEntry(p.name, st.st_size, st.st_mtime))
            for key in cache_evictions(entries, self.cache_max_bytes, frozenset(self._in_use)):
                (blobs / key).unlink(missing_ok=True)


def _place(source: FileSource, path: Path, workdir: Path, move: bool) -> None:
    """Extract an archive into workdir, or put the file there under its URL's name."""
    if source.archive is None:
        target = workdir / source.name
        if move:
            path.replace(target)
        else:
            shutil.copyfile(path, target)
        return
    try:
        if source.archive == ".zip":
            with zipfile.ZipFile(path) as z:
                z.extractall(workdir)  # strips absolute paths and ".." itself
        else:
            with tarfile.open(path, "r:*") as t:
                t.extractall(workdir, filter="data")  # refuses links and paths leaving workdir
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise FetchError(f"{source.url}: cannot extract the {source.archive} archive: {e}") from None

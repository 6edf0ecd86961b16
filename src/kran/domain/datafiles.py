"""Job data, the pure parts: file sources, archive kinds, cache eviction, retention."""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import unquote, urlsplit

SCHEMES = ("http", "https", "file")
ARCHIVES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_FILES = 100


@dataclass(frozen=True)
class FileSource:
    """A URL to fetch into the job's working dir, with an optional checksum."""

    url: str  # without the fragment
    name: str  # the file name in the working dir (archives: extracted instead)
    sha256: str | None
    archive: str | None  # one of ARCHIVES, or None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme


def parse_source(text: str) -> FileSource:
    """`https://host/path/ref.tar.gz#sha256=<hex>`; raises ValueError with the reason."""
    if any(c.isspace() for c in text) or "\0" in text or len(text) > 4096:
        raise ValueError(f"{text[:80]!r} is not a URL")
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{text!r}: only {', '.join(SCHEMES)} URLs can be fetched")
    if parts.scheme != "file" and not parts.netloc:
        raise ValueError(f"{text!r}: no host")
    sha = None
    if parts.fragment:
        key, _, value = parts.fragment.partition("=")
        if key != "sha256" or not SHA256.fullmatch(value.lower()):
            raise ValueError(f"{text!r}: the fragment must be #sha256=<64 hex digits>")
        sha = value.lower()
    name = posixpath.basename(unquote(parts.path))
    if name in ("", ".", ".."):
        raise ValueError(f"{text!r}: the URL's path names no file")
    lower = name.lower()
    archive = next((a for a in ARCHIVES if lower.endswith(a)), None)
    return FileSource(parts._replace(fragment="").geturl(), name, sha, archive)


def host_allowed(url: str, patterns: Sequence[str]) -> bool:
    """Whether an http(s) URL's host is one `patterns` allow (fnmatch, case-insensitive;
    no patterns: any host). Other schemes are not this rule's."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not patterns:
        return True
    host = (parts.hostname or "").lower()
    return any(fnmatchcase(host, p) for p in patterns)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the IPv4 address in its last 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local use, its own layout: refused whole (RFC 8215)


def address_refused(host: str, address: str, patterns: Sequence[str]) -> str | None:
    """Why a download may not connect to `address` (what `host` resolved to), or None.
    An address that is not on the public internet (loopback, private, link-local, cloud
    metadata, unique-local, ...) is reached only where files.fetch_hosts names the host:
    the server fetches as itself, from inside the operator's network, what a user names."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return f"{address} is not an address"
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address inside (mapped, 6to4, NAT64): that one counts
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    inside_v6 = isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip in _NAT64_LOCAL)
    if ip.is_global and not ip.is_multicast and not inside_v6:
        return None
    if patterns and any(fnmatchcase(host.lower(), p) for p in patterns):
        return None
    kind = "a loopback" if ip.is_loopback else "a link-local" if ip.is_link_local else "a non-public"
    return f"{host} is {kind} address ({ip}): downloads reach it only where files.fetch_hosts names it"


def parse_sources(texts: Sequence[str]) -> tuple[str, ...]:
    """Check URLs at submit time; the job keeps their text."""
    if len(texts) > MAX_FILES:
        raise ValueError(f"at most {MAX_FILES} files")
    for t in texts:
        parse_source(t)
    return tuple(texts)


@dataclass(frozen=True)
class CacheEntry:
    key: str
    size: int
    last_used: float


def cache_evictions(entries: Sequence[CacheEntry], cap_bytes: int, keep: frozenset[str] = frozenset()) -> list[str]:
    """Least recently used entries to delete so the cache fits in `cap_bytes`.

    Entries in `keep` (just fetched, or in use) are never chosen."""
    total = sum(e.size for e in entries)
    out = []
    for e in sorted(entries, key=lambda e: e.last_used):
        if total <= cap_bytes:
            break
        if e.key in keep:
            continue
        out.append(e.key)
        total -= e.size
    return out


@dataclass(frozen=True)
class StoredFiles:
    job_id: int
    finished_at: float
    size: int


def files_to_expire(
    jobs: Sequence[StoredFiles],
    now: float,
    max_age_s: float | None,
    max_total_bytes: int | None,
    other_bytes: int = 0,
) -> list[tuple[int, str]]:
    """Finished jobs whose files go: older than `max_age_s`, then oldest first until the
    total (theirs plus `other_bytes`, files that must stay) is under `max_total_bytes`.
    Returns (job id, reason)."""
    out: list[tuple[int, str]] = []
    kept = []
    for j in sorted(jobs, key=lambda j: j.finished_at):
        if max_age_s is not None and now - j.finished_at > max_age_s:
            out.append((j.job_id, "older than the retention time"))
        else:
            kept.append(j)
    if max_total_bytes is not None:
        total = other_bytes + sum(j.size for j in kept)
        for j in kept:
            if total <= max_total_bytes:
                break
            out.append((j.job_id, "data dir above its size threshold"))
            total -= j.size
    return out

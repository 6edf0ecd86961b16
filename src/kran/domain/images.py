"""Images as a managed resource, the pure parts: references, size classes, platform
choice in an index, and which images disk GC removes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

DOCKER_HUB = "docker.io"
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port]; docker.io for Docker Hub
    repository: str  # library/busybox on Docker Hub
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What the registry's manifests endpoint takes: the digest, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def explicit_registry(self) -> bool:
        return self.registry != DOCKER_HUB

    def __str__(self) -> str:
        name = self.repository if self.explicit_registry else self.repository.removeprefix("library/")
        base = f"{self.registry}/{name}" if self.explicit_registry else name
        return base + (f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}")


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    digest: str  # of the platform's manifest
    size: int  # compressed: config plus layers
    layers: tuple[tuple[str, int], ...]
    media_type: str
    index_digest: str | None = None  # when the reference named an index


def parse_ref(text: str) -> ImageRef:
    """`[host[:port]/]path[:tag][@sha256:...]`, as Docker reads it; ValueError otherwise."""
    t = text.strip()
    if not t or any(c.isspace() for c in t) or len(t) > 500:
        raise ValueError(f"{text!r} is not an image reference")
    digest = None
    if "@" in t:
        t, _, digest = t.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"{text!r}: the digest must be sha256:<64 hex digits>")
    tag = None
    last = t.rsplit("/", 1)[-1]
    if ":" in last:
        t, _, tag = t.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise ValueError(f"{text!r}: bad tag {tag!r}")
    first, sep, rest = t.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, t
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not all(_COMPONENT.fullmatch(p) for p in path.split("/")):
        raise ValueError(f"{text!r}: bad repository name {path!r}")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, path, tag, digest)


@lru_cache(maxsize=4096)
def canonical(ref_text: str) -> str:
    """The reference as Docker lists it (`busybox` -> `busybox:latest`), or as given when
    it does not parse."""
    try:
        return str(parse_ref(ref_text))
    except ValueError:
        return ref_text


def parse_size(text: str | int) -> int:
    """Bytes in '1G', '512M', '2.5GiB', '1000' (bytes)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 1G, 512M)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def parse_classes(text: str) -> list[tuple[str, int]]:
    """`heavyweight=1G,huge=10G` -> [(huge, 10G), (heavyweight, 1G)], biggest first."""
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, size = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item!r}: expected CLASS=SIZE, e.g. heavyweight=1G")
        out.append((name.strip(), parse_size(size)))
    return sorted(out, key=lambda c: -c[1])


def size_class(size: int, classes: Sequence[tuple[str, int]]) -> str | None:
    """The class of the biggest threshold the size reaches, or None (a normal image)."""
    return next((name for name, threshold in classes if size >= threshold), None)


ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def pick_platform(manifests: Sequence[dict[str, object]], os_: str = "linux", arch: str = "amd64") -> dict[str, object]:
    """The entry of a manifest list / OCI index for this platform."""
    for m in manifests:
        p = m.get("platform")
        if (
            isinstance(p, dict)
            and p.get("os") == os_
            and ARCH.get(str(p.get("architecture")), p.get("architecture")) == arch
        ):
            return dict(m)
    raise ValueError(f"no {os_}/{arch} image in the index")


@dataclass(frozen=True)
class NodeImage:
    image_id: str
    refs: tuple[str, ...]  # repo tags and repo digests
    size: int
    last_used: float  # kran's last job start with it on this node, else the image's creation


def gc_choice(
    images: Sequence[NodeImage],
    usage: int,
    high: int,
    low: int,
    *,
    keep: frozenset[str],
    force: bool = False,
) -> list[tuple[NodeImage, str]]:
    """Images to remove, least recently used first, when usage is above `high` (or
    `force`): until usage is at most `low`. `keep` holds ids and refs of images that are
    pinned, in use by a starting or running job, or being warmed: never chosen."""
    if usage <= high and not force:
        return []
    out = []
    for img in sorted(images, key=lambda i: i.last_used):
        if usage <= low:
            break
        if img.image_id in keep or any(r in keep for r in img.refs):
            continue
        out.append((img, f"LRU: disk use {usage} above {low} bytes, last used {img.last_used:.0f}"))
        usage -= img.size
    return out

"""Images as a managed resource, the pure parts: references, size classes, platform
choice in an index, and which images disk GC removes."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
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


EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"  # an empty tar


@dataclass(frozen=True)
class NodeImage:
    image_id: str
    refs: tuple[str, ...]  # repo tags and repo digests
    size: int  # as Docker reports it: every layer, shared ones included
    last_used: float  # kran's last job start with it on this node, else the image's creation
    layers: tuple[tuple[str, int], ...] = ()  # (chain id, bytes) from the base up
    containers: int = 0  # containers using it that GC would not remove first


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The OCI chain id of each layer: a layer is the same on disk only with the same
    parents, so images share a layer exactly when they share its chain id."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def history_sizes(diff_ids: Sequence[str], history: Sequence[int]) -> list[int] | None:
    """Each layer's bytes from the image's history sizes (oldest first), where they can be
    matched: history also has entries that made no layer (ENV, CMD), of 0 bytes."""
    if len(history) == len(diff_ids):
        return list(history)
    sized = [s for s in history if s > 0]
    if len(sized) == len(diff_ids):
        return sized
    content = [i for i, d in enumerate(diff_ids) if d != EMPTY_LAYER]
    if len(sized) != len(content):
        return None
    out = [0] * len(diff_ids)
    for i, size in zip(content, sized, strict=True):
        out[i] = size
    return out


def resolve_layers(images: Sequence[tuple[Sequence[str], list[int] | None, int]]) -> list[tuple[tuple[str, int], ...]]:
    """(chain ids, their sizes or None, the image's size) per image -> (chain id, bytes)
    per layer. A layer's size is known from any image whose history matched; an image whose
    did not gets what its size leaves over on its topmost layer of unknown size."""
    known: dict[str, int] = {}
    for chains, sizes, _ in images:
        if sizes is not None:
            known.update(zip(chains, sizes, strict=True))
    for chains, sizes, total in images:
        if sizes is None:
            unknown = [c for c in chains if c not in known]
            rest = max(0, total - sum(known[c] for c in chains if c in known))
            for c in unknown:
                known[c] = rest if c == unknown[-1] else 0
    return [tuple((c, known[c]) for c in chains) for chains, _, _ in images]


def _frees(images: Sequence[NodeImage], chosen: Sequence[NodeImage]) -> int:
    """Bytes removing `chosen` frees: the layers only they use."""
    gone = {id(i) for i in chosen}
    kept = {c for i in images if id(i) not in gone for c, _ in i.layers}
    return sum(size for c, size in dict(layer for i in chosen for layer in i.layers).items() if c not in kept)


def layers_size(images: Sequence[NodeImage]) -> int:
    """Bytes the images' layers take on disk, each layer once (Docker's LayersSize)."""
    return sum(dict(layer for i in images for layer in i.layers).values())


@dataclass(frozen=True)
class GcPlan:
    usage: int  # bytes of image layers before
    low: int
    chosen: list[tuple[NodeImage, int, str]]  # image, bytes its removal frees, reason
    left: int  # bytes after the chosen are gone
    short: str | None = None  # why `left` stays above `low`


def gc_choice(
    images: Sequence[NodeImage],
    high: int,
    low: int,
    *,
    keep: Mapping[str, str],
    force: bool = False,
) -> GcPlan:
    """Images to remove, least recently used first, when their layers' disk use is above
    `high` (or `force`): until it is at most `low`. `keep` maps ids and refs of images
    never chosen to why (pinned, in use, being pulled); images used by containers are kept
    too. A removal frees the layers no image left still uses, so an image's shared base
    counts only when the last image on it goes."""
    users: Counter[str] = Counter(c for i in images for c, _ in i.layers)
    usage = layers_size(images)
    if usage <= high and not force:
        return GcPlan(usage, low, [], usage)
    left = usage
    chosen = []
    kept: Counter[str] = Counter()
    for img in sorted(images, key=lambda i: i.last_used):
        why = keep.get(img.image_id) or next((keep[r] for r in img.refs if r in keep), None)
        if why is None and img.containers:
            why = "in use by a container"
        if why is not None:
            kept[why] += 1
            continue
        if left <= low:
            continue
        users.subtract(c for c, _ in img.layers)
        freed = sum(size for c, size in dict(img.layers).items() if users[c] == 0)
        chosen.append(
            (img, freed, f"LRU: layers {left} above {low} bytes, frees {freed}, last used {img.last_used:.0f}")
        )
        left -= freed
    if not force:  # a name whose layers all stay with kept images frees nothing: it stays too
        chosen = [
            c for c in chosen if c[1] or _frees(images, [i for i, _, _ in chosen if i is not c[0]]) < usage - left
        ]
    short = None
    if left > low:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(kept.items())) or "nothing else"
        short = f"layers still {left} above {low} bytes: the rest is kept ({why})"
    return GcPlan(usage, low, chosen, left, short)

import pytest

from kran.domain.images import (
    DOCKER_HUB,
    NodeImage,
    canonical,
    gc_choice,
    parse_classes,
    parse_ref,
    parse_size,
    pick_platform,
    size_class,
)


def test_references() -> None:
    r = parse_ref("busybox")
    assert (r.registry, r.repository, r.tag, r.digest) == (DOCKER_HUB, "library/busybox", "latest", None)
    assert not r.explicit_registry and str(r) == "busybox:latest"
    r = parse_ref("10.0.0.1:5000/tools/blast:2.15")
    assert (r.registry, r.repository, r.tag) == ("10.0.0.1:5000", "tools/blast", "2.15") and r.explicit_registry
    r = parse_ref("localhost/x@sha256:" + "a" * 64)
    assert r.registry == "localhost" and r.reference == "sha256:" + "a" * 64 and r.tag is None
    assert parse_ref("user/repo").repository == "user/repo"
    for bad in ("", "UPPER/case", "x@sha256:12", "a b", "x:bad tag"):
        with pytest.raises(ValueError):
            parse_ref(bad)


def test_sizes_and_classes() -> None:
    assert (
        parse_size("1G") == 1 << 30 and parse_size("512M") == 512 << 20 and parse_size("2.5GiB") == int(2.5 * (1 << 30))
    )
    classes = parse_classes("heavyweight=1G,huge=10G")
    assert classes == [("huge", 10 << 30), ("heavyweight", 1 << 30)]
    assert size_class(5 << 30, classes) == "heavyweight"
    assert size_class(10 << 30, classes) == "huge"
    assert size_class((1 << 30) - 1, classes) is None
    with pytest.raises(ValueError):
        parse_classes("heavy")
    with pytest.raises(ValueError):
        parse_size("lots")


def test_platform_choice() -> None:
    entries = [
        {"digest": "arm", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "amd", "platform": {"os": "linux", "architecture": "amd64"}},
    ]
    assert pick_platform(entries)["digest"] == "amd"
    assert pick_platform(entries, arch="arm64")["digest"] == "arm"
    with pytest.raises(ValueError):
        pick_platform(entries, arch="s390x")


def img(i: str, size: int, used: float, *refs: str) -> NodeImage:
    return NodeImage(i, refs, size, used)


def test_gc_removes_lru_until_the_low_mark_and_keeps_what_it_must() -> None:
    images = [img("a", 40, 3.0, "a:1"), img("b", 40, 1.0, "b:1"), img("c", 40, 2.0, "c:1"), img("d", 40, 0.5, "d:1")]
    assert gc_choice(images, 160, 200, 50, keep=frozenset()) == []  # under the high-water mark
    chosen = [i.image_id for i, _ in gc_choice(images, 160, 100, 50, keep=frozenset())]
    assert chosen == ["d", "b", "c"]  # least recently used first, until at most 50
    chosen = [i.image_id for i, _ in gc_choice(images, 160, 100, 50, keep=frozenset({"b:1", "c"}))]
    assert chosen == ["d", "a"]  # pinned / in use by ref or id: never
    everything = gc_choice(images, 160, 10**9, 0, keep=frozenset({"a:1"}), force=True)
    assert [i.image_id for i, _ in everything] == ["d", "b", "c"] and all("LRU" in why for _, why in everything)


def test_canonical_names_match_the_engine_s_listing() -> None:
    assert canonical("busybox") == "busybox:latest"
    assert canonical("docker.io/library/busybox:1") == "busybox:1"
    assert canonical("kran-demo/busybox") == "kran-demo/busybox:latest"
    assert canonical("127.0.0.1:5000/x") == "127.0.0.1:5000/x:latest"
    assert canonical("Not A Ref") == "Not A Ref"

import hashlib

import pytest

from kran.domain.images import (
    DOCKER_HUB,
    EMPTY_LAYER,
    GcPlan,
    NodeImage,
    canonical,
    chain_ids,
    gc_choice,
    history_sizes,
    layers_size,
    parse_classes,
    parse_ref,
    parse_size,
    pick_platform,
    resolve_layers,
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


def img(i: str, size: int, used: float, *refs: str, layers: tuple[tuple[str, int], ...] = ()) -> NodeImage:
    return NodeImage(i, refs, size, used, layers or ((f"L-{i}", size),))


def _ids(plan: GcPlan) -> list[str]:
    return [i.image_id for i, _, _ in plan.chosen]


def test_gc_removes_lru_until_the_low_mark_and_keeps_what_it_must() -> None:
    images = [img("a", 40, 3.0, "a:1"), img("b", 40, 1.0, "b:1"), img("c", 40, 2.0, "c:1"), img("d", 40, 0.5, "d:1")]
    assert gc_choice(images, 200, 50, keep={}).chosen == []  # 160 bytes: under the high-water mark
    assert _ids(gc_choice(images, 100, 50, keep={})) == ["d", "b", "c"]  # least recently used first, until <= 50
    plan = gc_choice(images, 100, 50, keep={"b:1": "pinned", "c": "in use by a job"})
    assert _ids(plan) == ["d", "a"] and plan.left == 80  # pinned / in use by ref or id: never
    assert plan.short == "layers still 80 above 50 bytes: the rest is kept (1 in use by a job, 1 pinned)"
    everything = gc_choice(images, 10**9, 0, keep={"a:1": "pinned"}, force=True)
    assert _ids(everything) == ["d", "b", "c"] and all("LRU" in why for _, _, why in everything.chosen)


def test_shared_layers_are_freed_with_the_last_image_on_them() -> None:
    base = (("base", 100),)  # four images on one 100-byte base, each adding 10; the base's own tag too
    images = [img("base", 100, 0.0, "debian:slim", layers=base)] + [
        img(x, 110, t, f"{x}:1", layers=base + ((f"top-{x}", 10),)) for x, t in (("a", 1.0), ("b", 2.0), ("c", 3.0))
    ]
    assert layers_size(images) == 130  # Docker's sizes add up to 430
    plan = gc_choice(images, 0, 0, keep={}, force=True)
    assert [(i.image_id, freed) for i, freed, _ in plan.chosen] == [("base", 0), ("a", 10), ("b", 10), ("c", 110)]
    assert plan.usage == 130 and plan.left == 0 and plan.short is None
    # the old count (each image's Size) stopped after two images, 200 "freed" of 130 used
    plan = gc_choice(images, 0, 20, keep={}, force=True)
    assert _ids(plan) == ["base", "a", "b", "c"] and plan.left == 0
    kept = gc_choice(images, 0, 0, keep={"c:1": "pinned"}, force=True)
    assert [freed for _, freed, _ in kept.chosen] == [0, 10, 10] and kept.left == 110
    assert kept.short and "1 pinned" in kept.short


def test_images_used_by_a_container_are_kept() -> None:
    images = [img("a", 40, 1.0, "a:1"), NodeImage("b", ("b:1",), 40, 0.0, (("L-b", 40),), containers=1)]
    plan = gc_choice(images, 0, 0, keep={}, force=True)
    assert _ids(plan) == ["a"] and plan.short and "1 in use by a container" in plan.short


def test_chain_ids_and_layer_sizes_from_history() -> None:
    assert chain_ids(["sha256:a"]) == ["sha256:a"]
    two = chain_ids(["sha256:a", "sha256:b"])
    assert two[0] == "sha256:a" and two[1] == "sha256:" + hashlib.sha256(b"sha256:a sha256:b").hexdigest()
    assert chain_ids(["sha256:x", "sha256:b"])[1] != two[1]  # same diff on another parent: another layer
    assert history_sizes(["a", "b"], [5, 7]) == [5, 7]
    assert history_sizes(["a", "b"], [5, 0, 0, 7]) == [5, 7]  # ENV, CMD: no layer
    assert history_sizes(["a", EMPTY_LAYER, "b"], [5, 0, 0, 7]) == [5, 0, 7]  # an empty layer (RUN true)
    assert history_sizes(["a", "b", "c"], [5, 0, 0, 7]) is None  # cannot tell
    sizes = resolve_layers([(["x", "y"], [100, 10], 110), (["x", "z"], None, 130), (["q"], None, 5)])
    assert sizes == [(("x", 100), ("y", 10)), (("x", 100), ("z", 30)), (("q", 5),)]


def test_canonical_names_match_the_engine_s_listing() -> None:
    assert canonical("busybox") == "busybox:latest"
    assert canonical("docker.io/library/busybox:1") == "busybox:1"
    assert canonical("kran-demo/busybox") == "kran-demo/busybox:latest"
    assert canonical("127.0.0.1:5000/x") == "127.0.0.1:5000/x:latest"
    assert canonical("Not A Ref") == "Not A Ref"


def test_a_normal_gc_leaves_names_that_free_nothing() -> None:
    shared = (("base", 100), ("app", 50))
    images = [
        img("alias", 150, 0.0, "python:3", layers=shared),  # least recently used, but its layers stay with "app"
        img("app", 150, 5.0, "app:1", layers=shared),
        img("old", 30, 1.0, "old:1", layers=(("old", 30),)),
    ]
    plan = gc_choice(images, 100, 150, keep={"app:1": "in use by a job"})
    assert _ids(plan) == ["old"] and plan.left == 150  # not "alias": removing it frees nothing
    assert _ids(gc_choice(images, 0, 0, keep={"app:1": "pinned"}, force=True)) == ["alias", "old"]  # --target lists it

import random

from kran.domain.placement import Assignment, Candidate, NodeCapacity, Placement, explain_wait, place_jobs, shortfall
from kran.domain.resources import Range, ResourceRequest, Resources
from tests.domain.test_resources import request


def node(cpus: float = 2, mem: int = 4096, used_cpus: float = 0, node_id: str = "local") -> NodeCapacity:
    return NodeCapacity(node_id, Resources(int(cpus * 1000), mem, 0, 1000), Resources(int(used_cpus * 1000), 0, 0, 0))


def cand(job_id: int, cpus: str = "1", waited: float = 0.0, mem: str = "512") -> Candidate:
    return Candidate(job_id, request(cpus, mem), waited)


def test_never_oversubscribes() -> None:
    p = place_jobs([cand(i) for i in range(5)], [node(cpus=2)], reserve_after_s=600)
    assert [a.job_id for a in p.assignments] == [0, 1]
    assert sum(a.allocation.millicpus for a in p.assignments) == 2000


def test_ranges_granted_in_queue_order() -> None:
    p = place_jobs([cand(1, "1-"), cand(2, "1")], [node(cpus=4)], reserve_after_s=600)
    assert [(a.job_id, a.allocation.millicpus) for a in p.assignments] == [(1, 4000)]


def test_small_job_backfills_behind_big_one() -> None:
    p = place_jobs([cand(1, "8"), cand(2, "1")], [node(cpus=2)], reserve_after_s=600)
    assert [a.job_id for a in p.assignments] == [2]
    assert p.reserved_for is None


def test_long_waiting_big_job_reserves_capacity() -> None:
    p = place_jobs([cand(1, "2", waited=700), cand(2, "1")], [node(cpus=2, used_cpus=1)], reserve_after_s=600)
    assert p.assignments == []
    assert p.reserved_for == 1


def test_jobs_ahead_of_reservation_still_start() -> None:
    p = place_jobs([cand(1, "1"), cand(2, "4", waited=700), cand(3, "1")], [node(cpus=2)], reserve_after_s=600)
    assert [a.job_id for a in p.assignments] == [1]
    assert p.reserved_for == 2


def test_spreads_over_nodes_and_skips_unschedulable() -> None:
    a, b, c = node(node_id="a", cpus=4), node(node_id="b", cpus=4, used_cpus=2), node(node_id="c", cpus=8)
    c.schedulable = False
    p = place_jobs([cand(i) for i in range(5)], [a, b, c], reserve_after_s=600)
    # most free cpus first, ties to the earlier node; c is never used
    assert [x.node_id for x in p.assignments] == ["a", "a", "a", "b", "a"]


def test_shortfall_and_explanations() -> None:
    assert shortfall(request("8"), Resources(2000, 4096, 0, 0)) == "needs 8 cpus, node has 2 free"
    assert shortfall(request("1", "8192"), Resources(2000, 4096, 0, 0)) == "needs 8192 MiB memory, node has 4096 free"
    assert shortfall(request("1"), Resources(2000, 4096, 0, 0)) is None
    why = explain_wait(
        request=request("8"), nodes=[node(cpus=16, used_cpus=14)], ahead=3, not_before_in_s=None, reserved_for=None
    )
    assert why == "needs 8 cpus, node has 2 free"
    assert "3 job(s) ahead" in explain_wait(
        request=request("1"), nodes=[node()], ahead=3, not_before_in_s=None, reserved_for=None
    )
    assert "reserved for job 7" in explain_wait(
        request=request("1"), nodes=[node()], ahead=0, not_before_in_s=None, reserved_for=7
    )
    assert "backoff" in explain_wait(
        request=request("1"), nodes=[node()], ahead=0, not_before_in_s=5, reserved_for=None
    )


def test_one_job_per_exclusive_lock() -> None:
    c = [
        Candidate(1, request("1", "512"), 0, "app/vol"),
        Candidate(2, request("1", "512"), 0, "app/vol"),
        Candidate(3, request("1", "512"), 0, "other/vol"),
        cand(4),
    ]
    held = {"other/vol"}
    p = place_jobs(c, [node(cpus=8)], reserve_after_s=600, held=held)
    assert [a.job_id for a in p.assignments] == [1, 4]
    assert held == {"other/vol", "app/vol"}


def test_a_job_waiting_for_its_lock_reserves_nothing() -> None:
    c = [Candidate(1, request("1", "512"), 9999, "v"), cand(2)]
    p = place_jobs(c, [node(cpus=2)], reserve_after_s=1, held={"v"})
    assert [a.job_id for a in p.assignments] == [2] and p.reserved_for is None


def test_nodes_holding_the_image_come_first() -> None:
    a, b = node(cpus=8, node_id="a"), node(cpus=4, node_id="b")
    b.images = frozenset({"reg/x:1"})
    c = Candidate(1, request("1", "512"), 0, image="reg/x:1")
    assert place_jobs([c], [a, b], reserve_after_s=600).assignments[0].node_id == "b"
    other = Candidate(2, request("1", "512"), 0, image="reg/y:1")
    assert place_jobs([other], [a, b], reserve_after_s=600).assignments[0].node_id == "a"  # spread
    assert place_jobs([other], [a, b], reserve_after_s=600, pack=True).assignments[0].node_id == "b"


def _reference(candidates: list[Candidate], nodes: list[NodeCapacity], reserve_after_s: float, pack: bool) -> Placement:
    """The placement rule written plainly (as place_jobs was before it was made fast)."""
    free = {n.node_id: n.free for n in nodes if n.schedulable}
    classes = {n.node_id: n.node_class for n in nodes}
    images = {n.node_id: n.images for n in nodes}
    held: set[str] = set()
    out: list[Assignment] = []
    for cand in candidates:
        if cand.exclusive is not None and cand.exclusive in held:
            continue
        best = None
        for node_id, avail in free.items():
            if cand.node_class is not None and classes[node_id] != cand.node_class:
                continue
            grant = cand.request.grant(avail)
            if grant is None:
                continue
            key = (
                cand.image is not None and cand.image in images[node_id],
                -avail.millicpus if pack else avail.millicpus,
            )
            if best is None or key > best[2]:
                best = (node_id, grant, key)
        if best is not None:
            free[best[0]] = free[best[0]] - best[1]
            out.append(Assignment(cand.job_id, best[0], best[1]))
            if cand.exclusive is not None:
                held.add(cand.exclusive)
        elif cand.waited_s >= reserve_after_s:
            return Placement(out, cand.job_id)
    return Placement(out, None)


def test_the_fast_placement_decides_as_the_plain_rule() -> None:
    rng = random.Random(7)

    def rrange(lo: int, hi: int) -> Range:
        low = rng.randint(lo, hi)
        return rng.choice((Range(low, low), Range(low, None), Range(low, low + rng.randint(0, hi))))

    for _ in range(400):
        nodes = [
            NodeCapacity(
                f"n{i}",
                Resources(rng.randint(0, 8) * 500, rng.randint(0, 8) * 512, rng.randint(0, 2), rng.randint(0, 3) * 100),
                allocated=Resources(rng.randint(0, 2) * 500, 0, 0, 0),
                schedulable=rng.random() > 0.1,
                node_class=rng.choice(("", "big")),
                images=frozenset(rng.sample(["a", "b", "c"], rng.randint(0, 2))),
            )
            for i in range(rng.randint(1, 6))
        ]
        cands = [
            Candidate(
                j,
                ResourceRequest(rrange(1, 4) if rng.random() < 0.5 else Range(rng.randint(1, 4) * 250, None),
                                rrange(1, 1024), Range(rng.randint(0, 1), rng.randint(1, 2)), rrange(0, 100)),
                rng.random() * 10,
                rng.choice((None, None, "vol1")),
                rng.choice((None, None, "big", "")),
                rng.choice((None, "a", "b")),
            )
            for j in range(rng.randint(0, 25))
        ]  # fmt: skip
        pack = rng.random() < 0.5
        assert place_jobs(cands, nodes, reserve_after_s=5.0, pack=pack) == _reference(cands, nodes, 5.0, pack)

"""kran.web.dag: the step graph's layout (pure): layers, order, no overlaps, edges down."""

from __future__ import annotations

import random

import pytest

from kran.web.dag import (
    BOX_H,
    GAP_X,
    MAX_W,
    CycleError,
    Layout,
    Step,
    closest_positions,
    crossings,
    layout,
)


def steps(*names: str) -> list[Step]:
    return [Step(n, "succeeded") for n in names]


def layers(drawn: Layout) -> dict[str, int]:
    return {b.step.name: b.layer for b in drawn.boxes}


def boxes(drawn: Layout) -> dict[str, tuple[float, float, float, float]]:
    return {b.step.name: (b.x, b.y, b.w, b.h) for b in drawn.boxes}


def assert_no_overlap(drawn: Layout) -> None:
    placed = list(boxes(drawn).items())
    for i, (a, (ax, ay, aw, ah)) in enumerate(placed):
        assert ax >= 0 and ay >= 0 and ax + aw <= drawn.width and ay + ah <= drawn.height, a
        for b, (bx, by, bw, bh) in placed[i + 1 :]:
            apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
            assert apart, (a, b)


def assert_edges_go_down(drawn: Layout) -> None:
    layer = layers(drawn)
    at = boxes(drawn)
    for line in drawn.lines:
        assert layer[line.target] > layer[line.source], line
        ys = [y for _, y in line.points]
        assert ys == sorted(ys), line
        sx, sy, sw, sh = at[line.source]
        tx, ty, tw, _ = at[line.target]
        assert line.points[0] == pytest.approx((sx + sw / 2, sy + sh))  # from the bottom of the source
        assert line.points[-1] == pytest.approx((tx + tw / 2, ty))  # into the top of the target
        # where it passes a layer, no box of that layer is in its way
        for x, y in line.points[1:-1]:
            for name, (bx, by, bw, bh) in at.items():
                if by <= y <= by + bh:
                    assert not bx <= x <= bx + bw, (line, name)


def test_a_diamond_has_three_layers() -> None:
    drawn = layout(steps("a", "b", "c", "d"), [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert layers(drawn) == {"a": 0, "b": 1, "c": 1, "d": 2}
    at = boxes(drawn)
    assert at["b"][1] == at["c"][1] > at["a"][1] and at["d"][1] > at["b"][1]
    # the top and the bottom sit centred between the two in the middle
    middle = (at["b"][0] + at["b"][2] / 2 + at["c"][0] + at["c"][2] / 2) / 2
    assert at["a"][0] + at["a"][2] / 2 == pytest.approx(middle)
    assert at["d"][0] + at["d"][2] / 2 == pytest.approx(middle)
    assert len(drawn.lines) == 4
    assert_no_overlap(drawn)
    assert_edges_go_down(drawn)


def test_a_step_sits_below_its_deepest_parent_and_long_edges_go_around_boxes() -> None:
    # a -> b -> c -> d, and a -> d directly: d is in layer 3, the long edge passes layers 1 and 2
    drawn = layout(steps("a", "b", "c", "d"), [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")])
    assert layers(drawn) == {"a": 0, "b": 1, "c": 2, "d": 3}
    long = next(line for line in drawn.lines if (line.source, line.target) == ("a", "d"))
    assert len(long.points) == 2 + 2 * 2  # in and out of each layer it passes
    assert long.path.startswith("M") and " C" in long.path and " L" in long.path
    assert_no_overlap(drawn)
    assert_edges_go_down(drawn)


def test_order_within_a_layer_follows_the_parents() -> None:
    # given as [y, x] their edges would cross (a -> x, b -> y); by the barycenter they do not
    drawn = layout(steps("a", "b", "y", "x"), [("a", "x"), ("b", "y")])
    at = boxes(drawn)
    assert at["a"][0] < at["b"][0]
    assert at["x"][0] < at["y"][0]
    assert crossings([[0, 1], [3, 2]], [(0, 3), (1, 2)]) == 0
    assert crossings([[0, 1], [2, 3]], [(0, 3), (1, 2)]) == 1


def test_crossings_are_reduced_on_a_bigger_case() -> None:
    # two chains and a fan, given in an order that crosses everything
    names = ["p", "q", "r", "q1", "r1", "p1", "q2", "p2", "r2"]
    edges = [("p", "p1"), ("q", "q1"), ("r", "r1"), ("p1", "p2"), ("q1", "q2"), ("r1", "r2")]
    drawn = layout(steps(*names), edges)
    order = {}
    for b in drawn.boxes:
        order.setdefault(b.layer, []).append((b.x, b.step.name))
    rows = [[n for _, n in sorted(order[i])] for i in sorted(order)]
    assert rows == [["p", "q", "r"], ["p1", "q1", "r1"], ["p2", "q2", "r2"]]


def test_a_cycle_is_refused_naming_it() -> None:
    with pytest.raises(CycleError, match=r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"):
        layout(steps("a", "b", "c", "z"), [("z", "a"), ("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(CycleError, match="a -> a"):
        layout(steps("a"), [("a", "a")])


def test_an_edge_to_no_step_or_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="names no step"):
        layout(steps("a"), [("a", "b")])
    with pytest.raises(ValueError, match="same name"):
        layout(steps("a", "a"), [])


def test_empty_and_unconnected() -> None:
    empty = layout([], [])
    assert empty.boxes == () and empty.lines == ()
    drawn = layout(steps("one", "two", "three"), [])
    assert set(layers(drawn).values()) == {0}
    assert [b.step.name for b in sorted(drawn.boxes, key=lambda b: b.x)] == ["one", "two", "three"]
    assert_no_overlap(drawn)


def test_duplicate_edges_are_drawn_once() -> None:
    assert len(layout(steps("a", "b"), [("a", "b"), ("a", "b")]).lines) == 1


def test_long_names_are_cut_to_fit_their_box() -> None:
    name = "a_step_with_a_name_far_longer_than_any_box_is_wide_" * 2
    (box,) = layout([Step(name, "running", 7)], []).boxes
    assert box.w == MAX_W and box.label.endswith("…") and len(box.label) < len(name)
    assert box.step.name == name and box.step.job == 7
    assert box.h == BOX_H


@pytest.mark.parametrize("seed", range(25))
def test_random_graphs_never_overlap_and_edges_always_go_down(seed: int) -> None:
    rnd = random.Random(seed)
    n = rnd.randint(2, 18)
    names = [f"s{i}" + "x" * rnd.randint(0, 30) for i in range(n)]
    edges = {(names[a], names[b]) for a in range(n) for b in range(a + 1, n) if rnd.random() < 0.25}
    shuffled = names[:]
    rnd.shuffle(shuffled)
    drawn = layout(steps(*shuffled), sorted(edges))
    assert len(drawn.boxes) == n and len(drawn.lines) == len(edges)
    assert_no_overlap(drawn)
    assert_edges_go_down(drawn)


def test_closest_positions_keep_boxes_apart_and_near_their_targets() -> None:
    assert closest_positions([0.0, 500.0], [100.0, 100.0]) == [-50.0, 450.0]  # room: exactly there
    lefts = closest_positions([0.0, 0.0, 0.0], [100.0, 100.0, 100.0])  # all want the same place
    assert [b - a for a, b in zip(lefts, lefts[1:], strict=False)] == [100 + GAP_X] * 2
    assert (lefts[0] + lefts[2]) / 2 + 50 == pytest.approx(0.0)  # centred on it

"""A step graph laid out for drawing, top to bottom: pure, no I/O.

Layers by longest path (a step sits one layer below its deepest parent, so every edge
goes down); an edge spanning several layers passes through a point in each layer between
(a "dummy", ordered like a step), so it never crosses a box. Within a layer steps are
ordered by the barycenter of their parents, then of their children, a few sweeps, keeping
the order with the fewest crossings. Each layer's x positions are the closest (least
squares) to the centers of their parents, then children, that keep the boxes apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CHAR_W = 7.2  # the width of a character at the graph's font size, about
PAD = 12.0
MIN_W, MAX_W = 110.0, 250.0
BOX_H = 52.0
GAP_X, GAP_Y = 28.0, 56.0
MARGIN = 12.0
SWEEPS = 8


class CycleError(ValueError):
    """The steps depend on each other in a circle: there is no order to draw them in."""


@dataclass(frozen=True)
class Step:
    name: str
    state: str
    job: int | None = None  # its one job; None when it has none yet, or several (scatter)
    note: str = ""  # e.g. "12/20 done" for a step with several jobs
    href: str | None = None  # where the box links to


@dataclass(frozen=True)
class Box:
    step: Step
    layer: int
    x: float
    y: float
    w: float
    h: float
    label: str  # the name, cut to fit the box

    @property
    def cx(self) -> float:
        return self.x + self.w / 2


@dataclass(frozen=True)
class Line:
    source: str
    target: str
    points: tuple[tuple[float, float], ...]  # from the source's bottom to the target's top

    @property
    def path(self) -> str:
        """SVG path data: curves between layers, straight through the layers it passes."""
        (x, y), *rest = self.points
        d = [f"M{x:.1f},{y:.1f}"]
        for i, (nx, ny) in enumerate(rest):
            if i % 2 == 0:  # a gap between layers
                mid = (y + ny) / 2
                d.append(f"C{x:.1f},{mid:.1f} {nx:.1f},{mid:.1f} {nx:.1f},{ny:.1f}")
            else:  # through a layer, past its boxes
                d.append(f"L{nx:.1f},{ny:.1f}")
            x, y = nx, ny
        return " ".join(d)


@dataclass(frozen=True)
class Layout:
    boxes: tuple[Box, ...]
    lines: tuple[Line, ...]
    width: float
    height: float


def box_width(step: Step) -> float:
    chars = max(len(step.name), len(step.state) + len(step.note) + 3)
    return min(MAX_W, max(MIN_W, chars * CHAR_W + 2 * PAD))


def fit(text: str, width: float) -> str:
    room = int((width - 2 * PAD) / CHAR_W)
    return text if len(text) <= room else text[: max(1, room - 1)] + "…"


def longest_path_layers(n: int, edges: Iterable[tuple[int, int]], names: Sequence[str]) -> list[int]:
    """Each node's layer: 0 without parents, else one more than its deepest parent."""
    children: list[list[int]] = [[] for _ in range(n)]
    parents: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        children[a].append(b)
        parents[b].append(a)
    missing = [len(p) for p in parents]
    layer = [0] * n
    ready = [v for v in range(n) if not missing[v]]
    done = 0
    while ready:
        v = ready.pop()
        done += 1
        for c in children[v]:
            layer[c] = max(layer[c], layer[v] + 1)
            missing[c] -= 1
            if not missing[c]:
                ready.append(c)
    if done < n:
        raise CycleError("the steps depend on each other in a cycle: " + _cycle(parents, missing, names))
    return layer


def _cycle(parents: list[list[int]], missing: list[int], names: Sequence[str]) -> str:
    """One cycle among the nodes left over (each has a parent left over), as names."""
    v = next(i for i, m in enumerate(missing) if m)
    seen: list[int] = []
    while v not in seen:
        seen.append(v)
        v = next(p for p in parents[v] if missing[p])
    loop = seen[seen.index(v) :]
    return " -> ".join(names[i] for i in [*reversed(loop), loop[-1]])


def crossings(order: list[list[int]], edges: Iterable[tuple[int, int]]) -> int:
    """How many pairs of edges cross, edges between adjacent layers only."""
    where = {v: (li, i) for li, layer in enumerate(order) for i, v in enumerate(layer)}
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for a, b in edges:
        (la, pa), (_, pb) = where[a], where[b]
        by_layer.setdefault(la, []).append((pa, pb))
    total = 0
    for pairs in by_layer.values():
        for i, (a1, b1) in enumerate(pairs):
            total += sum(1 for a2, b2 in pairs[i + 1 :] if (a1 - a2) * (b1 - b2) < 0)
    return total


def order_layers(order: list[list[int]], parents: list[list[int]], children: list[list[int]]) -> list[list[int]]:
    """Sweeps down (by parents' positions) and up (by children's), keeping the best."""
    edges = [(p, c) for c, ps in enumerate(parents) for p in ps]
    best, best_n = [list(layer) for layer in order], crossings(order, edges)
    current = [list(layer) for layer in order]
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        indices = range(1, len(current)) if down else range(len(current) - 2, -1, -1)
        for li in indices:
            near = current[li - 1] if down else current[li + 1]
            pos = {v: i for i, v in enumerate(near)}
            links = parents if down else children

            def key(iv: tuple[int, int], pos: dict[int, int] = pos, links: list[list[int]] = links) -> float:
                i, v = iv
                ps = [pos[u] for u in links[v] if u in pos]
                return sum(ps) / len(ps) if ps else float(i)

            current[li] = [v for _, v in sorted(enumerate(current[li]), key=key)]
        n = crossings(current, edges)
        if n < best_n:
            best, best_n = [list(layer) for layer in current], n
    return best


def closest_positions(targets: list[float], widths: list[float]) -> list[float]:
    """Left edges, in this order and GAP_X apart, whose centers are closest (least squares)
    to `targets`: isotonic regression by pooling adjacent violators."""
    offsets, acc = [], 0.0
    for i, w in enumerate(widths):
        if i:
            acc += widths[i - 1] / 2 + GAP_X + w / 2
        offsets.append(acc)
    blocks: list[list[float]] = []  # [mean, count]
    for t, o in zip(targets, offsets, strict=True):
        blocks.append([t - o, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    centers: list[float] = []
    i = 0
    for m, k in blocks:
        for _ in range(int(k)):
            centers.append(m + offsets[i])
            i += 1
    return [c - w / 2 for c, w in zip(centers, widths, strict=True)]


def layout(steps: Sequence[Step], edges: Iterable[tuple[str, str]]) -> Layout:
    """Boxes and edge lines for `steps`; `edges` go from a step to one that needs it.
    Raises CycleError for a cycle, ValueError for an edge naming no step."""
    names = [s.name for s in steps]
    index = {name: i for i, name in enumerate(names)}
    if len(index) != len(names):
        raise ValueError("two steps have the same name")
    pairs: list[tuple[int, int]] = []
    for source, target in edges:
        if source not in index or target not in index:
            raise ValueError(f"edge {source} -> {target} names no step")
        pairs.append((index[source], index[target]))
    pairs = list(dict.fromkeys(pairs))  # each edge once, in the order given
    n = len(steps)
    layer = longest_path_layers(n, pairs, names)
    # an edge spanning layers gets a point (a dummy node) in each layer between
    chains: list[list[int]] = []
    parents: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs:
        chain = [a]
        for li in range(layer[a] + 1, layer[b]):
            layer.append(li)
            parents.append([chain[-1]])
            chain.append(len(layer) - 1)
        chain.append(b)
        parents[b].append(chain[-2])
        chains.append(chain)
    total = len(layer)
    children: list[list[int]] = [[] for _ in range(total)]
    for c, ps in enumerate(parents):
        for p in ps:
            children[p].append(c)
    order: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    for v in range(total):
        order[layer[v]].append(v)
    order = order_layers(order, parents, children)
    width = [box_width(steps[v]) if v < n else 0.0 for v in range(total)]
    center = _place(order, width, parents, children)
    left = min((center[v] - width[v] / 2 for v in range(total)), default=0.0)
    shift = MARGIN - left

    def x(v: int) -> float:
        return center[v] - width[v] / 2 + shift

    def top(v: int) -> float:
        return MARGIN + layer[v] * (BOX_H + GAP_Y)

    boxes = tuple(
        Box(steps[v], layer[v], x(v), top(v), width[v], BOX_H, fit(steps[v].name, width[v]))
        for li in order
        for v in li
        if v < n
    )
    lines = []
    for chain in chains:
        first, last = chain[0], chain[-1]
        points = [(center[first] + shift, top(first) + BOX_H)]
        for d in chain[1:-1]:
            points += [(center[d] + shift, top(d)), (center[d] + shift, top(d) + BOX_H)]
        points.append((center[last] + shift, top(last)))
        lines.append(Line(names[first], names[last], tuple(points)))
    right = max((x(v) + width[v] for v in range(total)), default=0.0)
    return Layout(boxes, tuple(lines), right + MARGIN, MARGIN * 2 + len(order) * (BOX_H + GAP_Y) - GAP_Y)


def _place(
    order: list[list[int]], width: list[float], parents: list[list[int]], children: list[list[int]]
) -> list[float]:
    """Centers: packed, then each layer pulled under its parents, over its children, and
    under its parents again."""
    center = [0.0] * len(width)
    for layer in order:
        for v, left in zip(layer, closest_positions([0.0] * len(layer), [width[v] for v in layer]), strict=True):
            center[v] = left + width[v] / 2
    passes = (
        (range(1, len(order)), parents),
        (range(len(order) - 2, -1, -1), children),
        (range(1, len(order)), parents),
    )
    for indices, links in passes:
        for li in indices:
            layer = order[li]
            targets = [sum(center[u] for u in links[v]) / len(links[v]) if links[v] else center[v] for v in layer]
            lefts = closest_positions(targets, [width[v] for v in layer])
            for v, left in zip(layer, lefts, strict=True):
                center[v] = left + width[v] / 2
    return center

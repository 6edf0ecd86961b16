"""The safe walk and the safe removal at any depth (a job's tree can be thousands of
levels deep: each level a recursion in Python's rmtree and in the walk, before)."""

from __future__ import annotations

import os
from pathlib import Path

from kran.jobfs import MAX_DEPTH, Tree, remove_tree


def _deep(top: Path, levels: int, outside: Path) -> None:
    """`levels` nested dirs `d`, each with a file, an empty dir and a link to `outside`."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            os.mkdir("e", dir_fd=fd)
            os.symlink(outside, "l", dir_fd=fd)
            Path(f"/proc/self/fd/{fd}/f").write_text("x")
            sub = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = sub
    finally:
        os.close(fd)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_removal_goes_to_any_depth_and_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    top = tmp_path / "job"
    top.mkdir()
    _deep(top, 5 * MAX_DEPTH, outside)
    before = _fds()
    remove_tree(top)
    assert not top.exists()
    assert (outside / "keep").read_text() == "kept"
    assert _fds() == before


def test_removal_of_a_file_a_link_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    remove_tree(tmp_path / "f")
    remove_tree(tmp_path / "link")
    remove_tree(tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


def test_the_walk_stops_entering_at_its_depth_without_recursion(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    top = tmp_path / "job"
    top.mkdir()
    _deep(top, 3 * MAX_DEPTH, outside)
    before = _fds()
    try:
        with Tree(top) as tree:
            items = list(tree.walk())
            deepest = max(item.rel.count("/") for item in items)
            walk = tree.walk()
            next(walk)
            next(walk)
            walk.close()  # (a walk left half way closes what it opened)
    finally:
        remove_tree(top)  # (pytest's own clean-up of old tmp dirs recurses: RecursionError)
    assert deepest == MAX_DEPTH
    assert len(items) == 4 * (MAX_DEPTH + 1)
    assert not any(item.rel.startswith("l/") for item in items)
    assert _fds() == before

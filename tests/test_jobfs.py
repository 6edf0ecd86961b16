"""The safe walk and the safe removal at any depth (a job's tree can be thousands of
levels deep: each level a recursion in Python's rmtree and in the walk, before)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kran.jobfs import MAX_DEPTH, Tree
from kran.jobfs_removal import remove_tree


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


def _fds() -> list[str]:
    """What this process's fds under pytest's tmp dirs point at (other threads of the test
    session, its engines' readers and timers, open and close fds of their own meanwhile)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("/tmp/", "/var/tmp/")):
            found.append(target)
    return sorted(found)


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


def test_used_bytes_counts_every_level_each_file_once_and_follows_nothing(tmp_path: Path) -> None:
    """What eviction measures: a job's files nested past the walk's depth are counted too
    (else hiding them 129 levels down escaped it), hard links once, links never followed;
    the fds it holds stay bounded however deep the tree."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"o" * (4 << 20))  # behind every level's link: never counted
    top = tmp_path / "job"
    top.mkdir()
    levels = 3 * MAX_DEPTH
    _deep(top, levels, outside)
    bottom = top / "/".join(["d"] * levels)
    fd = os.open(bottom.parent, os.O_RDONLY)  # (the path is too long for one open)
    try:
        os.close(os.open("d/deep", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        with open(f"/proc/self/fd/{fd}/d/deep", "wb") as f:
            f.write(b"x" * (2 << 20))
        os.link("d/deep", "d/again", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    before = _fds()
    try:
        with Tree(top) as tree:
            used = tree.used_bytes()
            walked = sum(item.st.st_blocks * 512 for item in tree.walk())
        after = _fds()
    finally:
        remove_tree(top)
    per_level = 3 * 4096 + 4096  # d, e and f's block (a link takes none here)
    assert 2 << 20 <= used - levels * per_level <= (2 << 20) + 64 * 1024, used
    assert used - walked > 2 << 20  # the bounded walk never got there
    assert after == before


def test_used_bytes_stops_where_a_dir_was_moved_away_from_under_it(tmp_path: Path) -> None:
    """Past MAX_DEPTH a dir's fd is closed on the way down and its parent reached again
    through "..": a dir the job moved meanwhile does not lead the walk elsewhere, nor end
    it with a smaller figure (a job could hide its files from eviction so)."""
    import kran.jobfs as jobfs

    top = tmp_path / "job"
    top.mkdir()
    _deep(top, 5, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "x" / "e").mkdir(parents=True)  # where d/d/d lands: an `e` beside it, as d/d has
    (elsewhere / "x" / "e" / "big").write_bytes(b"e" * (1 << 20))
    opened = []
    original = os.open

    def moving_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = original(path, flags, mode, dir_fd=dir_fd)
        if path == "d" and dir_fd is not None:
            opened.append(path)
            if len(opened) == 3:  # the walk is in d/d/d, d/d's fd closed: the job moves d/d/d away
                os.rename(top / "d" / "d" / "d", elsewhere / "x" / "d")
        return fd

    old_depth = jobfs.MAX_DEPTH
    jobfs.MAX_DEPTH = 1
    os.open = moving_open
    before = _fds()
    try:
        with Tree(top) as tree, pytest.raises(jobfs.Disrupted):  # (not a smaller figure: that hid files)
            tree.used_bytes()
    finally:
        os.open = original
        jobfs.MAX_DEPTH = old_depth
    assert len(opened) >= 3
    assert _fds() == before


def test_retention_counts_a_finished_jobs_files_at_any_depth(tmp_path: Path) -> None:
    """files.max_data_mb: a job's files nested past the walk's depth counted nothing, so a
    data dir could grow past its bound through them."""
    from kran.services.scheduler.retention import tree_size

    top = tmp_path / "job"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(2 * MAX_DEPTH):
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = sub
        with open(f"/proc/self/fd/{fd}/big", "wb") as f:
            f.write(b"x" * (4 << 20))
    finally:
        os.close(fd)
    try:
        assert tree_size(top) >= 4 << 20
    finally:
        remove_tree(top)


def test_a_size_walk_reads_a_bounded_number_of_entries(tmp_path: Path) -> None:
    """A job's millions of files (or of hard-linked ones, each kept to be counted once) cost
    the server seconds and memory at every eviction and retention walk: past the budget
    the walk stops, Disrupted with what it counted so far (eviction takes it for the most
    over its grant; retention counts that floor). The whole data dir is walked without one."""
    import kran.jobfs as jobfs
    from kran.services.scheduler.retention import tree_size

    top = tmp_path / "job"
    top.mkdir()
    for i in range(50):
        (top / f"f{i}").write_bytes(b"x" * 8192)
        os.link(top / f"f{i}", top / f"g{i}")
    with Tree(top) as tree:
        whole = tree.used_bytes(None)
        with pytest.raises(jobfs.Disrupted, match="more than 40 files") as e:
            tree.used_bytes(40)
    assert whole >= 50 * 8192 and 0 < e.value.counted < whole
    assert 0 < tree_size(top, 40) < whole and tree_size(top, None) == whole

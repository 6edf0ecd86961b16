"""Root hands a job's tree to the job's user before it starts (staged inputs, app
volumes, binds). Another process of that user may rename things in the tree meanwhile:
root must never follow it out (the attack helper gave a user every file of a root dir,
on its first try, by swapping a dir for a link mid-walk)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kran.adapters.engines import ownership
from kran.jobfs_removal import remove_tree

USER = (1_100_000_042, 1_100_000_042)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    top, target = tmp_path / "work", tmp_path / "rootdir"
    (top / "D").mkdir(parents=True)
    target.mkdir()
    for name in ("a", "b", "secret"):
        (top / "D" / name).write_text("staged")
        (target / name).write_text("root's")
        (target / name).chmod(0o600)
    yield top, target


def test_a_dir_swapped_for_a_link_mid_walk_is_not_followed(
    tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    top, target = tree
    d_ino = (top / "D").stat().st_ino
    real_scandir = os.scandir

    def scandir_then_swap(path: Any = ".") -> Any:
        listing = list(real_scandir(path))
        ino = os.fstat(path).st_ino if isinstance(path, int) else os.stat(path).st_ino
        if ino == d_ino and not (top / "D").is_symlink():  # the user's rename, right after the listing
            (top / "D").rename(top / "D.moved")
            (top / "D").symlink_to(target)
        return _Listing(listing)

    monkeypatch.setattr(os, "scandir", scandir_then_swap)
    ownership._chown_tree(top, USER)
    monkeypatch.undo()
    assert {p.stat().st_uid for p in target.iterdir()} == {0}, "root's files were given to the user"
    assert {p.stat().st_uid for p in (top / "D.moved").iterdir()} == {USER[0]}


def test_a_root_file_hard_linked_in_stays_roots(tree: tuple[Path, Path]) -> None:
    top, target = tree
    os.link(target / "secret", top / "D" / "linked")  # where protected_hardlinks is off
    ownership._chown_tree(top, USER)
    assert (target / "secret").stat().st_uid == 0
    assert (top / "D" / "a").stat().st_uid == USER[0] and top.stat().st_uid == USER[0]


def test_a_tree_thousands_of_levels_deep_is_handed_over(tmp_path: Path) -> None:
    """A job leaves 3,000 nested dirs in an app's volume: the walk recursed once a level
    (RecursionError, so every later launch of the app failed). Now the first MAX_DEPTH
    levels become the next job's user's, deeper ones stay as they are, and no fd is left."""
    top = tmp_path / "volume"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        sub = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = sub
    os.close(fd)
    before = len(os.listdir("/proc/self/fd"))
    try:
        ownership._chown_tree(top, USER)
        assert len(os.listdir("/proc/self/fd")) == before
        assert top.stat().st_uid == USER[0]
        assert (top / "/".join(["d"] * ownership.MAX_DEPTH)).stat().st_uid == USER[0]
    finally:
        remove_tree(top)  # (pytest's own clean-up of old tmp dirs recurses: RecursionError)


class _Listing:
    """What os.scandir returns: an iterator and a context manager."""

    def __init__(self, entries: list[Any]) -> None:
        self._it = iter(entries)

    def __iter__(self) -> _Listing:
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

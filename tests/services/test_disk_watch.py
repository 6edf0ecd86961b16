"""services.disk.DiskWatch in-process, with a stand-in for the file system's numbers."""

from __future__ import annotations

from pathlib import Path

from kran.services.disk import CHECK_EVERY_S, STORE_FULL_HOLD_S, DiskWatch

G = 1 << 30


class Disk:
    def __init__(self) -> None:
        self.free, self.total, self.calls, self.now = 5 * G, 10 * G, 0, 0.0

    def usage(self, _: Path) -> tuple[int, int]:
        self.calls += 1
        return self.free, self.total


def test_full_and_back_by_itself_measured_at_most_twice_a_second() -> None:
    d = Disk()
    w = DiskWatch(Path("/x"), "1G", usage=d.usage, clock=lambda: d.now)
    assert w.full() is None
    d.free = G // 2
    assert w.full() is None and d.calls == 1  # the last measurement is still fresh
    assert w.full(fresh=True) is not None
    d.free = 2 * G
    d.now += CHECK_EVERY_S
    assert w.full() is None and d.calls == 3


def test_a_refused_store_write_counts_for_a_while_whatever_the_watermark() -> None:
    d = Disk()
    w = DiskWatch(Path("/x"), "0", usage=d.usage, clock=lambda: d.now)
    w.store_refused("database or disk is full")
    why = w.full()
    assert why is not None and "database or disk is full" in why
    d.now += STORE_FULL_HOLD_S
    assert w.full() is None


def test_an_unreadable_data_dir_counts_as_full() -> None:
    def gone(_: Path) -> tuple[int, int]:
        raise FileNotFoundError(2, "No such file or directory")

    why = DiskWatch(Path("/x"), "1G", usage=gone).full()
    assert why is not None and "No such file" in why

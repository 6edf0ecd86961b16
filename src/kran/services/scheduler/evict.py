"""Eviction: a running job whose files fill the data dir is stopped, and its files go.

While the data dir counts as full (services.disk), no job starts, for anyone: one job
writing without end would hold the whole server. So, as Kubernetes evicts pods under disk
pressure, the running attempt whose files (its attempt dir: working dir and logs) exceed
the disk it was granted by the most is killed (`evicted`, final: run again, it would fill
the disk again; at once, whatever grace it asked for, and over a kill already under way),
and once it has ended its working dir is removed and its logs cut to
their first MiB. One at a time: the next is looked at once that one's files are gone and
the disk is measured again. Jobs within their grant (`--disk`) are never evicted.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from kran.domain.disk import MIB, eviction_choice
from kran.domain.states import JobState
from kran.jobfs import Disrupted, Refused, Tree, open_beneath
from kran.jobfs_removal import remove_tree
from kran.ports import Clock, Store
from kran.services.datadir import DataDir
from kran.services.disk import DiskWatch
from kran.services.scheduler.state import SchedulerState
from kran.services.wakeups import Wakeups

log = logging.getLogger("kran.evict")
EVERY_S = 2.0
LOG_KEEP = MIB  # what an evicted attempt keeps of each log
UNMEASURED = 1 << 62  # the size of files that moved while measured: past any grant


class Evictor:
    def __init__(
        self, store: Store, disk: DiskWatch, dirs: DataDir, state: SchedulerState, wakeups: Wakeups, clock: Clock
    ) -> None:
        self.store = store
        self.disk = disk
        self.dirs = dirs
        self.state = state
        self.wakeups = wakeups
        self.clock = clock

    def tick(self) -> int | None:
        """One look (in the pool: it walks job trees); returns the job evicted, if one was."""
        why = self.disk.full(fresh=True)
        if not why or not why.startswith("data dir full"):  # (unreadable: nothing to measure)
            return None
        active = self.store.active_attempts()
        live = {(a.job_id, a.attempt) for a in active}
        for key in [k for k in list(self.state.evicting) if k not in live]:  # (it had ended before the kill)
            self.state.evicting.pop(key, None)
        if any(a.kill_reason == "evicted" for a in active) or self.state.evicting:
            return None  # one at a time: the last one's files go first
        used, unmeasured = [], dict[tuple[int, int], str]()
        for a in active:
            key = (a.job_id, a.attempt)
            # (one that ended is being collected: its end is its own; another kill does not shield it)
            if a.state != JobState.RUNNING or key in self.state.in_flight:
                continue
            try:
                taken = attempt_bytes(self.dirs.attempt_dir(a.job_id, a.attempt))
            except Disrupted as e:  # moved while measured, or millions of files: it goes first (hiding files so fails)
                taken = UNMEASURED
                unmeasured[key] = str(e)
            used.append((key, taken, a.disk_mb * MIB))
        choice = eviction_choice(used)
        if choice is None:
            return None
        (job_id, attempt), taken, granted = choice
        files = (
            f"its files could not be measured ({unmeasured[(job_id, attempt)]})"
            if (job_id, attempt) in unmeasured
            else f"its files took {taken // MIB} MiB"
        )
        self.state.evicting[(job_id, attempt)] = (
            f"the data dir was full ({why.removeprefix('data dir full: ')}) and {files},"
            f" over the {granted // MIB} MiB of disk it asked for (`disk`); its working dir was removed"
        )
        log.warning("evicting job %s attempt %s: %s; %s", job_id, attempt, files, why)
        self.store.request_kill([job_id], "evicted", self.clock.now())
        self.wakeups.exited()  # the monitor sends the kill now
        return job_id


def attempt_bytes(attempt_dir: Path) -> int:
    """What an attempt's files take on disk, at any depth (jobfs: nothing followed);
    Disrupted when the job moved its dirs under the walk."""
    try:
        with Tree(attempt_dir) as tree:
            return tree.used_bytes()
    except Disrupted:
        raise
    except Refused:
        return 0


def free_evicted(attempt_dir: Path) -> None:
    """An evicted attempt, once ended: its working dir goes, its logs keep their first MiB."""
    remove_tree(attempt_dir / "work")
    for name in ("stdout", "stderr"):
        try:
            fd = open_beneath(attempt_dir, name, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (Refused, OSError):
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size > LOG_KEEP:
                os.ftruncate(fd, LOG_KEEP)
        finally:
            os.close(fd)

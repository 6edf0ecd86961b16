"""Retention: finished jobs' files go after a while, or oldest first when the data dir
grows past its threshold. The job records stay, marked `files_expired`."""

from __future__ import annotations

import logging
from pathlib import Path

from kran.domain.datafiles import StoredFiles, files_to_expire
from kran.jobfs import MAX_ENTRIES, Disrupted, Refused, Tree
from kran.jobfs_removal import remove_tree
from kran.ports import Apps, Clock, Store
from kran.services.datadir import DataDir

log = logging.getLogger("kran.retention")


class Retention:
    def __init__(
        self, dirs: DataDir, apps: Apps, store: Store, clock: Clock, max_age_s: float | None, max_data_bytes: int | None
    ) -> None:
        self.dirs = dirs
        self.apps = apps
        self.store = store
        self.clock = clock
        self.max_age_s = max_age_s  # finished jobs keep their files this long; None: forever
        self.max_data_bytes = max_data_bytes  # oldest first past this; None: no bound

    def tick(self) -> list[int]:
        """One pass; returns the jobs whose files were removed."""
        max_total = self.max_data_bytes
        max_age = self.max_age_s
        if max_total is None and max_age is None:
            return []
        finished = self.apps.finished_with_files()
        sizes: dict[int, int] = {}
        other = 0
        if max_total is not None:  # only the size threshold needs the walk
            sizes = {job_id: tree_size(self.dirs.job_dir(job_id)) for job_id, _ in finished}
            other = max(0, tree_size(self.dirs.jobs, None) - sum(sizes.values()))
        stored = [StoredFiles(job_id, at, sizes.get(job_id, 0)) for job_id, at in finished]
        expired = files_to_expire(stored, self.clock.now(), max_age, max_total, other)
        for job_id, reason in expired:
            job = self.store.get_job(job_id)
            remove_tree(self.dirs.job_dir(job_id))
            if job is not None and job.spec.inputs:
                remove_tree(self.dirs.upload_dir(job.spec.inputs))
            log.info("removed the files of job %s: %s", job_id, reason)
        self.apps.mark_files_expired([j for j, _ in expired])
        return [j for j, _ in expired]


def tree_size(root: Path, max_entries: int | None = MAX_ENTRIES) -> int:
    """Bytes on disk under root (allocated blocks, so sparse files count what they use), at
    any depth (a tree nested past the walk's depth was undercounted), each inode once,
    through jobfs: a job's links are never followed. Past `max_entries` (one job's tree: a
    job may make millions), what was counted until then."""
    try:
        with Tree(root) as tree:
            return tree.used_bytes(max_entries)
    except Disrupted as e:  # (moved meanwhile, or too many files to walk: what was counted)
        return e.counted
    except Refused:
        return 0

"""Retention: finished jobs' files go after a while, or oldest first when the data dir
grows past its threshold. The job records stay, marked `files_expired`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from kran.domain.datafiles import StoredFiles, files_to_expire
from kran.jobfs import Refused, Tree
from kran.services.runtime import Runtime, job_dir

log = logging.getLogger("kran.retention")


def retention_tick(rt: Runtime) -> list[int]:
    """One pass; returns the jobs whose files were removed."""
    max_total = rt.settings.max_data_mb << 20 or None
    max_age = rt.settings.retention_s
    if max_total is None and max_age is None:
        return []
    finished = rt.apps.finished_with_files()
    sizes: dict[int, int] = {}
    other = 0
    if max_total is not None:  # only the size threshold needs the walk
        sizes = {job_id: tree_size(job_dir(rt.data_dir, job_id)) for job_id, _ in finished}
        other = max(0, tree_size(rt.data_dir / "jobs") - sum(sizes.values()))
    stored = [StoredFiles(job_id, at, sizes.get(job_id, 0)) for job_id, at in finished]
    expired = files_to_expire(stored, rt.clock.now(), max_age, max_total, other)
    for job_id, reason in expired:
        job = rt.store.get_job(job_id)
        shutil.rmtree(job_dir(rt.data_dir, job_id), ignore_errors=True)
        if job is not None and job.spec.inputs:
            shutil.rmtree(rt.upload_dir(job.spec.inputs), ignore_errors=True)
        log.info("removed the files of job %s: %s", job_id, reason)
    rt.apps.mark_files_expired([j for j, _ in expired])
    return [j for j, _ in expired]


def tree_size(root: Path) -> int:
    """Bytes on disk under root (allocated blocks, so sparse files count what they use),
    walked through the safe walk: a job's links are never followed."""
    try:
        with Tree(root) as tree:
            return tree.disk_bytes()
    except Refused:
        return 0

"""What this machine offers: detected, then overridden by settings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kran.domain.resources import Resources


def detect_gpus() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def detect_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


def detect_capacity(
    data_dir: Path,
    cpus: float | None = None,
    mem_mb: int | None = None,
    gpus: int | None = None,
    disk_mb: int | None = None,
) -> Resources:
    return Resources(
        millicpus=round((cpus if cpus is not None else len(os.sched_getaffinity(0))) * 1000),
        mem_mb=mem_mb if mem_mb is not None else detect_memory_mb(),
        gpus=gpus if gpus is not None else detect_gpus(),
        disk_mb=disk_mb if disk_mb is not None else shutil.disk_usage(data_dir).free // (1024 * 1024),
    )

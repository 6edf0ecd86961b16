"""What the services share: the ports, the node, and the scheduler's working set."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kran.domain.jobs import JobSpec
from kran.domain.placement import NodeCapacity
from kran.domain.resources import Resources
from kran.ports import (
    Apps,
    AttemptRef,
    Clock,
    Cluster,
    Engine,
    Fetcher,
    ImageStore,
    Metrics,
    NodeImages,
    Registry,
    Schedules,
    Store,
    Volumes,
    WorkflowRunner,
    Workflows,
)
from kran.services.batcher import SubmitBatcher
from kran.services.disk import DiskWatch
from kran.settings import Settings

LOCAL_NODE = "local"


@dataclass
class Runtime:
    settings: Settings
    store: Store
    engine: Engine
    clock: Clock
    capacity: Resources
    data_dir: Path
    instance: str
    submitter: SubmitBatcher
    schedules: Schedules
    metrics: Metrics
    apps: Apps
    fetcher: Fetcher
    volumes: Volumes
    disk: DiskWatch  # the data dir's free space against files.min_free
    registry: Registry
    image_store: ImageStore
    node_images: NodeImages  # nodes whose Docker API kran reaches (image manager)
    workflows: Workflows  # workflow runs
    workflow_runner: WorkflowRunner  # the workflow engine (cwltool)
    cluster: Cluster | None = None  # a cluster engine's nodes; None: this machine only
    pack: bool = False  # placement: fill nodes one by one instead of spreading
    image_state: Any = None  # the image manager's in-memory state (services.images.ImageState)
    workflow_state: Any = None  # runs executing here (services.workflows.WorkflowState)
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(16, "kran-engine"))
    # engine work finished in the pool, for the loop to record: (kind, payload)
    results: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    wake: threading.Event = field(default_factory=threading.Event)
    dispatch_needed: threading.Event = field(default_factory=threading.Event)
    monitor_needed: threading.Event = field(default_factory=threading.Event)
    reserved_for: int | None = None
    last_dispatch: float = 0.0  # monotonic
    last_schedule_tick: float = 0.0  # monotonic
    last_retention: float = 0.0  # monotonic
    last_sweep: float = field(default_factory=time.monotonic)  # the start reconciles already
    last_image_tick: float = 0.0  # monotonic
    in_flight: set[tuple[int, int]] = field(default_factory=set)  # being collected
    kills_sent: set[tuple[int, int]] = field(default_factory=set)
    # attempts running on an app volume: (key, quota MiB), to name a full volume as the reason
    volume_attempts: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    _specs: dict[int, JobSpec] = field(default_factory=dict)

    def poke(self) -> None:
        """Something changed that may let a queued job start."""
        self.dispatch_needed.set()
        self.wake.set()

    def node_totals(self) -> list[NodeCapacity]:
        """Nodes with their total capacity only (no store read)."""
        if self.cluster is None:
            return [NodeCapacity(LOCAL_NODE, self.capacity)]
        return [
            NodeCapacity(n.node_id, n.total, schedulable=n.schedulable, node_class=n.node_class)
            for n in self.cluster.nodes()
        ]

    def nodes(self) -> list[NodeCapacity]:
        allocated = self.store.allocated_by_node()
        nodes = self.node_totals()
        held = self.node_image_refs()
        for n in nodes:
            n.allocated = allocated.get(n.node_id, Resources())
            n.images = held.get(n.node_id, frozenset())
        return nodes

    def node_image_refs(self) -> dict[str, frozenset[str]]:
        """Node -> image references it holds, from the image manager's cached inventory."""
        return {} if self.image_state is None else dict(self.image_state.refs)

    def hostnames(self) -> dict[str, str]:
        if self.cluster is None:
            return {LOCAL_NODE: socket.gethostname()}
        return {n.node_id: n.hostname for n in self.cluster.nodes()}

    def spec_of(self, job_id: int, spec_json: str) -> JobSpec:
        spec = self._specs.get(job_id)
        if spec is None:
            if len(self._specs) > 50_000:
                self._specs.clear()
            spec = self._specs[job_id] = JobSpec.from_json(json.loads(spec_json))
        return spec

    def attempt_dir(self, job_id: int, attempt: int) -> Path:
        return job_dir(self.data_dir, job_id) / str(attempt)

    def ref(self, job_id: int, attempt: int, handle: str | None, grace_s: float | None = None) -> AttemptRef:
        return AttemptRef(job_id, attempt, handle, self.attempt_dir(job_id, attempt), grace_s)

    def upload_dir(self, upload_id: str) -> Path:
        """Files uploaded with a job (`--input`), copied into each attempt's working dir."""
        return self.data_dir / "uploads" / upload_id


def job_dir(data_dir: Path, job_id: int) -> Path:
    """Data dir layout: jobs/<id>/<attempt>/{work/, stdout, stderr, exit_code} (docs/data-dir.md)."""
    return data_dir / "jobs" / str(job_id)

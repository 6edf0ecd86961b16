"""Prometheus metrics (prometheus-client), on a registry of this server's own.

Counters and histograms are fed by the services through the Metrics port; gauges (queue
length, jobs by state, node capacity, image disk) are read from the store, the nodes and the image inventory at
scrape time. Labels stay bounded: no job ids, and user names only when `per_user` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kran.domain.placement import NodeCapacity
from kran.ports import Store

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
RUN_BUCKETS = (0.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 7 * 24 * 3600)


class PrometheusMetrics:
    def __init__(self, per_user: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.per_user = per_user
        r = self.registry
        self.submissions = Counter("kran_job_submissions", "Jobs submitted", registry=r)
        self.user_submissions = Counter("kran_user_job_submissions", "Jobs submitted per user", ["user"], registry=r)
        self.starts = Counter("kran_job_starts", "Attempts that started running", registry=r)
        self.completions = Counter("kran_job_completions", "Jobs that ended, by end state", ["state"], registry=r)
        self.dispatch = Histogram(
            "kran_dispatch_latency_seconds", "Queued to running, per attempt", buckets=LATENCY_BUCKETS, registry=r
        )
        self.run_time = Histogram(
            "kran_job_run_seconds", "Wall time of ended attempts", buckets=RUN_BUCKETS, registry=r
        )
        self.pull_time = Histogram("kran_image_pull_seconds", "Image pull time", buckets=RUN_BUCKETS, registry=r)
        self.tick = Histogram(
            "kran_scheduler_tick_seconds", "Duration of a scheduler pass", buckets=LATENCY_BUCKETS, registry=r
        )
        self.api = Histogram(
            "kran_api_request_seconds",
            "API request latency",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    # ---- the Metrics port

    def submitted(self, n: int, user: str) -> None:
        self.submissions.inc(n)
        if self.per_user:
            self.user_submissions.labels(user).inc(n)

    def started(self, dispatch_latency_s: float) -> None:
        self.starts.inc()
        self.dispatch.observe(max(dispatch_latency_s, 0.0))

    def ended(self, state: str, run_seconds: float | None) -> None:
        self.completions.labels(state).inc()
        if run_seconds is not None:
            self.run_time.observe(max(run_seconds, 0.0))

    def scheduler_pass(self, seconds: float) -> None:
        self.tick.observe(seconds)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.api.labels(route, method, str(status)).observe(seconds)

    def watch_state(self, state: StateCollector) -> None:
        self.registry.register(state)


@dataclass(eq=False)  # hashable: the registry keys its collectors
class StateCollector(Collector):
    """Gauges read at scrape time."""

    store: Store
    nodes: Callable[[], list[NodeCapacity]]
    image_bytes: Callable[[], dict[str, int]]  # node -> its image layers' bytes
    engines: Callable[[], dict[str, str | None]]  # engine -> why it is down, or None

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily("kran_queue_length", "Queued jobs by priority class", labels=["priority_class"])
        by_class = self.store.queued_by_priority_class()
        for cls in ("low", "normal", "high"):
            queue.add_metric([cls], by_class.get(cls, 0))
        yield queue
        states = GaugeMetricFamily("kran_jobs", "Jobs by state", labels=["state"])
        for state, count in sorted(self.store.counts_by_state().items()):
            states.add_metric([state], count)
        yield states
        families: dict[str, Any] = {
            name: GaugeMetricFamily(f"kran_node_{name}", f"Node {name}: allocated and total", labels=["node", "kind"])
            for name in ("cpus", "memory_bytes", "gpus")
        }
        for node in self.nodes():
            for kind, res in (("allocated", node.allocated), ("total", node.total)):
                families["cpus"].add_metric([node.node_id, kind], res.cpus)
                families["memory_bytes"].add_metric([node.node_id, kind], res.mem_mb * 1024 * 1024)
                families["gpus"].add_metric([node.node_id, kind], res.gpus)
        yield from families.values()
        up = GaugeMetricFamily("kran_engine_up", "1 while the engine answers, 0 while it does not", labels=["engine"])
        for name, down in sorted(self.engines().items()):
            up.add_metric([name], 0 if down else 1)
        yield up
        disk = self.image_bytes()
        if disk:
            g = GaugeMetricFamily(
                "kran_image_disk_bytes", "Disk used by image layers, each layer once", labels=["node"]
            )
            for node_id, size in sorted(disk.items()):
                g.add_metric([node_id], size)
            yield g

"""Admission: whether this server can run a job at all. Every way into the queue (a
submit, a batch, an upload, a workflow step, a schedule at add and at each fire) asks
it, so a job one refuses, all refuse. Whether the engine answers right now is not asked:
a job for an engine that is down is taken and waits for it, as a batch queue takes work
while its nodes are down (the dispatcher holds it, and it says why it waits)."""

from __future__ import annotations

from collections.abc import Callable

from kran.domain.jobs import JobSpec
from kran.domain.placement import NodeCapacity, fits_anywhere
from kran.domain.resources import format_cpus
from kran.errors import InvalidInput
from kran.ports import Engine
from kran.services.nodes import NodeDirectory

Rule = Callable[[JobSpec, list[NodeCapacity]], None]


class Admission:
    def __init__(self, engine: Engine, nodes: NodeDirectory, allow_host_processes: bool) -> None:
        self.engine = engine
        self.nodes = nodes
        self.allow_host_processes = allow_host_processes
        self.rules: tuple[Rule, ...] = (self._kind, self._host_processes, self._volume, self._fits)

    def check(self, specs: list[JobSpec]) -> None:
        """InvalidInput naming the first job refused and why."""
        nodes = self.nodes.totals()
        for i, spec in enumerate(specs):
            try:
                for rule in self.rules:
                    rule(spec, nodes)
            except InvalidInput as e:
                if len(specs) == 1:
                    raise
                raise InvalidInput(f"job {i + 1}: {e}", e.field) from None

    def refusal(self, spec: JobSpec) -> str | None:
        """Why the job would be refused now; None: it would be taken."""
        try:
            self.check([spec])
        except InvalidInput as e:
            return str(e)
        return None

    def _kind(self, spec: JobSpec, nodes: list[NodeCapacity]) -> None:
        can = self.engine.capabilities
        if spec.image and not can.containers:
            raise InvalidInput("this server runs host processes only: no --image", "image")
        if not spec.image and not can.host_processes:
            raise InvalidInput("jobs on this engine run in containers: give the job an --image", "image")

    def _host_processes(self, spec: JobSpec, nodes: list[NodeCapacity]) -> None:
        if not spec.image and not self.allow_host_processes:
            raise InvalidInput("jobs without --image are not allowed on this server", "image")

    def _volume(self, spec: JobSpec, nodes: list[NodeCapacity]) -> None:
        if spec.volume and not self.engine.capabilities.volumes:
            raise InvalidInput(
                "app volumes are loop mounts on the server's machine: not available on this engine yet", "app"
            )

    def _fits(self, spec: JobSpec, nodes: list[NodeCapacity]) -> None:
        if fits_anywhere(spec.request, nodes, spec.node_class):
            return
        m = spec.request.minimum
        total = self.nodes.largest()
        raise InvalidInput(
            f"asks for at least {format_cpus(m.millicpus)} cpus, {m.mem_mb} MiB memory, "
            f"{m.gpus} gpus, {m.disk_mb} MiB disk, more than the largest node has "
            f"({format_cpus(total.millicpus)} cpus, {total.mem_mb} MiB, {total.gpus} gpus, "
            f"{total.disk_mb} MiB disk)",
            "resources",
        )

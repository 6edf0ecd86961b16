"""Submitting and killing jobs."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

from kran.domain.auth import Principal
from kran.domain.jobs import JobSpec
from kran.domain.placement import NodeCapacity, fits_anywhere
from kran.domain.records import Submission
from kran.domain.resources import format_cpus
from kran.domain.states import JobState
from kran.errors import Conflict, InvalidInput, NotFound, Unavailable
from kran.services import images
from kran.services.queries import visible_job
from kran.services.runtime import Runtime


def check_runnable(rt: Runtime, spec: JobSpec, nodes: list[NodeCapacity], index: int | None = None) -> None:
    where = f"job {index + 1}: " if index is not None else ""
    can = rt.engine.capabilities
    if spec.image:
        if not can.containers:
            raise InvalidInput(f"{where}this server runs host processes only: no --image", "image")
        why = rt.engine.unavailable(image=True)
        if why:
            raise Unavailable(f"{where}image jobs cannot run: {why}")
    elif not can.host_processes:
        raise InvalidInput(f"{where}jobs on this engine run in containers: give the job an --image", "image")
    elif not rt.settings.allow_host_processes:
        raise InvalidInput(f"{where}jobs without --image are not allowed on this server", "image")
    if spec.volume and not can.volumes:
        raise InvalidInput(
            f"{where}app volumes are loop mounts on the server's machine: not available on this engine yet", "app"
        )
    if not fits_anywhere(spec.request, nodes, spec.node_class):
        m = spec.request.minimum
        total = rt.capacity
        raise InvalidInput(
            f"{where}asks for at least {format_cpus(m.millicpus)} cpus, {m.mem_mb} MiB memory, "
            f"{m.gpus} gpus, {m.disk_mb} MiB disk, more than the largest node has "
            f"({format_cpus(total.millicpus)} cpus, {total.mem_mb} MiB, {total.gpus} gpus, "
            f"{total.disk_mb} MiB disk)",
            "resources",
        )


def classify_all(rt: Runtime, specs: Sequence[JobSpec]) -> list[JobSpec]:
    """Image digest, size and class from the registry (blocking I/O: call it off the event loop)."""
    return [images.classify(rt, s) for s in specs]


def submit_jobs(
    rt: Runtime,
    specs: Sequence[JobSpec],
    owner: str,
    submitted_by: str | None = None,
    sees_all: bool = False,
    idempotency_key: str | None = None,
    request_digest: str = "",
) -> Future[list[int]]:
    """Check the specs, then hand them to the group-commit writer: all are stored or none.
    The future resolves once they are committed (and the scheduler has been woken).
    `sees_all`: an admin submits, whose jobs may wait on anyone's. An idempotency key
    used within a day gives the ids stored the first time (nothing is stored again)."""
    if not specs:
        raise InvalidInput("no jobs given", "jobs")
    nodes = rt.node_totals()
    for i, spec in enumerate(specs):
        check_runnable(rt, spec, nodes, i if len(specs) > 1 else None)
        check_dependencies(rt, spec, owner, sees_all, i if len(specs) > 1 else None)
    return rt.submitter.submit(Submission(specs, owner, submitted_by, idempotency_key, request_digest))


def check_dependencies(rt: Runtime, spec: JobSpec, owner: str, sees_all: bool, index: int | None = None) -> None:
    """A job waits only on jobs its owner may see: another user's job is "not found", as a
    missing one is (waiting on it told its state and outcome)."""
    where = f"job {index + 1}: " if index is not None else ""
    for dep in (*spec.after, *spec.after_any):
        job = rt.store.get_job(dep)
        if job is None or not (sees_all or job.owner == owner):
            raise InvalidInput(f"{where}after: unknown job {dep}", "after")


def kill_job(rt: Runtime, job_id: int, who: Principal) -> JobState:
    """Kill a queued or active job. Running work is stopped by the monitor (SIGTERM, then
    SIGKILL after the grace period); the job ends as killed when it has stopped."""
    visible_job(rt, job_id, who)
    result = rt.store.request_kill([job_id], "user", rt.clock.now())
    if job_id not in result:
        raise NotFound(f"job {job_id} not found")
    state = result[job_id]
    if state.is_final and state != JobState.KILLED:
        raise Conflict(f"job {job_id} already ended: {state}")
    rt.wake.set()
    return state
